"""The shared optimisation step: global batch split over processes and accumulation steps, mixed
precision, DDP gradient averaging, clipping and the lr schedule. Both trainers (teacher pretraining
and distillation) drive it; their methods only compute a loss."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from ..config import PRECISIONS
from ..errors import UserError
from . import distributed as D


@dataclass(frozen=True)
class BatchPlan:
    """Global batch = world x accumulate x micro-batch; one optimiser step per global batch."""

    global_batch: int
    world: int
    accumulate: int

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world * self.accumulate)


def batch_plan(section: str, global_batch: int, accumulate: int = 1, world: Optional[int] = None) -> BatchPlan:
    """Split `<section>.batch_size` over the processes and accumulation steps, or say why it does not split."""
    world = D.env_world_size() if world is None else int(world)
    accumulate = int(accumulate)
    if accumulate < 1:
        raise UserError(f"{section}.accumulate = {accumulate}; use 1 or more accumulation steps")
    if global_batch % (world * accumulate):
        parts = f"{world} process{'es' if world > 1 else ''}" + (f" x {accumulate} accumulation steps" if accumulate > 1 else "")
        raise UserError(f"{section}.batch_size = {global_batch} does not split over {parts}; "
                        f"use a multiple of {world * accumulate}")
    return BatchPlan(int(global_batch), world, accumulate)


def check_precision(section: str, precision: str, device: torch.device) -> str:
    precision = str(precision)
    if precision not in PRECISIONS:
        raise UserError(f"{section}.precision = {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"{section}.precision = 'fp16' needs a CUDA device (float16 training on {device.type} has no "
                        f"gradient scaler); use {section}.precision = 'bf16' or 'fp32'")
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU and CUDA, fp16 on CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(setting: Any, device: torch.device, precision: str) -> torch.memory_format:
    """`channels_last` as a torch memory format: NHWC when true, or for auto on CUDA under bf16/fp16."""
    if setting == "auto":
        setting = torch.device(device).type == "cuda" and precision in ("bf16", "fp16")
    return torch.channels_last if setting else torch.contiguous_format


def make_scaler(device: torch.device, precision: str) -> Optional[torch.amp.GradScaler]:
    """fp16 needs loss scaling (its 5-bit exponent underflows small gradients); bf16 does not."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def loader_workers(setting: Any, device: "torch.device | str") -> int:
    """`data.workers` as a number: itself, or for "auto" the cores this process can spare.

    A GPU step leaves the CPU free, so decoding and augmentation take every core of this process
    but one (at most 16); a CPU step uses the cores itself, so workers only pay off where there are
    many (a quarter of them, at most 8) and a 2- or 4-core machine loads in the training process."""
    if setting != "auto":
        return int(setting)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    per_process = max(cores // local, 1)
    if torch.device(device).type == "cuda":
        return min(per_process - 1, 16)
    return 0 if per_process <= 4 else min(per_process // 4, 8)


def make_loader(dataset: Dataset, plan: BatchPlan, seed: int, epoch: int, *, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Micro-batches of this process's share of a seeded shuffle, drop_last.

    One process shuffles with a generator seeded `seed + epoch` (it also seeds the workers); under
    DDP DistributedSampler splits one permutation of `seed` and `epoch` by rank."""
    if D.is_distributed():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(seed + epoch + 7919 * D.rank())  # worker seeds differ per rank
    else:
        gen = torch.Generator().manual_seed(seed + epoch)
        sampler = RandomSampler(dataset, generator=gen)
    return DataLoader(dataset, batch_size=plan.micro_batch, sampler=sampler, drop_last=True, num_workers=workers,
                      generator=gen, pin_memory=pin_memory)


def steps(loader: Iterable, accumulate: int) -> Iterator[List[Any]]:
    """Group micro-batches into optimiser steps; a last incomplete group is dropped."""
    group: List[Any] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []


def grad_norm(params: Iterable[nn.Parameter]) -> float:
    norms = [p.grad.detach().norm(2) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms), 2))


class Stepper:
    """One optimiser step from the micro-batches of one global batch.

    `model` is what the forward runs through (a DDP wrapper under torchrun); `forward(model, batch)`
    returns a dict with the scalar `loss` (this micro-batch's mean) and scalar terms to log.
    Each micro-batch's loss is divided by their number, so the summed gradient is that of the mean
    over the global batch; DDP averages it over ranks on the last micro-batch only (no_sync before).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], *, device: torch.device,
                 precision: str = "fp32", clip: float = 0.0, base_lr: float,
                 lr_factor: Callable[[int], float], grad_groups: Optional[Dict[str, List[nn.Parameter]]] = None):
        self.optimizer, self.params = optimizer, list(params)
        self.device, self.precision = device, precision
        self.clip, self.base_lr, self.lr_factor = float(clip), float(base_lr), lr_factor
        self.grad_groups = grad_groups or {}
        self.scaler = make_scaler(device, precision)

    def set_lr(self, step: int) -> float:
        lr = self.base_lr * self.lr_factor(step)
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr if g.get("fix_lr") else lr
        return lr

    def step(self, model: nn.Module, step: int, micro_batches: Sequence[Any],
             forward: Callable[[nn.Module, Any], Dict[str, Any]]) -> Dict[str, float]:
        """Run the step; returns the terms averaged over micro-batches and ranks, the grad norms and lr."""
        lr = self.set_lr(step)
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, torch.Tensor] = {}
        n = len(micro_batches)
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        for i, batch in enumerate(micro_batches):
            with (model.no_sync() if ddp and i < n - 1 else contextlib.nullcontext()):
                with autocast(self.device, self.precision):
                    out = forward(model, batch)
                loss = out["loss"]
                if loss.dtype in (torch.float16, torch.bfloat16):
                    loss = loss.float()  # divide and scale in fp32
                loss = loss / n
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            for k, v in out.items():
                v = v.detach().double() if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
                sums[k] = sums.get(k, 0.0) + v.to(self.device) / n
        if self.precision == "bf16":
            # bf16 has no scaler to skip a step on inf/nan gradients (a ResNet-18 at 16 px gave a nan
            # convolution weight gradient on CPU)
            finite = all(bool(torch.isfinite(p.grad).all()) for p in self.params if p.grad is not None)
            sums["_grads_finite"] = torch.tensor(float(finite), dtype=torch.float64, device=self.device)
        terms = self._reduce(sums)
        # every rank sees the same reduced values, so all stop together
        if terms.pop("_grads_finite", 1.0) < 1.0:
            raise FloatingPointError("gradients became inf/nan under bf16 autocast (precision = 'fp32' avoids it)")
        if not all(torch.isfinite(torch.tensor(v)) for v in terms.values()):
            raise FloatingPointError(f"loss became {terms['loss']}")
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norms = {f"grad_{k}": grad_norm(v) for k, v in self.grad_groups.items()}
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return {**terms, **norms, "lr": lr}

    def _reduce(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        keys = sorted(sums)
        vec = torch.stack([sums[k].reshape(()) for k in keys])
        if D.is_distributed():
            import torch.distributed as dist

            dist.all_reduce(vec)  # on self.device: nccl reduces CUDA tensors only
            vec /= D.world_size()
        return dict(zip(keys, vec.tolist()))

    def state_dict(self) -> Dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
