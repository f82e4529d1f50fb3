"""Teacher training loop: `train_teacher(cfg, out_dir, resume)`.

Single process by default; under `torchrun --nproc_per_node N` it joins the process group
(gloo on CPU, nccl on GPU), wraps the method in DistributedDataParallel with synchronised
BatchNorm, splits the global batch `teacher.batch_size` over the ranks and writes checkpoints
from rank 0. Checkpoints are written after every epoch and resume exactly (RNG included).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from bssl.config import teacher_settings
from bssl.data import dataset_from_config
from bssl.data.augment import eval_transform
from bssl.errors import UserError
from bssl.utils import JsonlLogger, load_checkpoint, pick_device, save_checkpoint, seed_everything

from . import distributed as D
from .backbone import build_backbone, resolve_small_stem
from .base import METHODS, method_config, method_table
from .monitor import extract_features, knn_accuracy

CHECKPOINT_NAME = "teacher.pt"
LOG_NAME = "teacher_log.jsonl"


class _Indexed(Dataset):
    """(transform(image), index, label) from a bssl dataset; index feeds FUSSL's pseudo-labels."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        return self.transform(img), i, label


def build_method(cfg: Dict[str, Any]):
    """The configured method (backbone + heads) on CPU, plus its resolved settings."""
    t = teacher_settings(cfg)
    image_size = int(cfg["data"]["image_size"])
    small_stem = resolve_small_stem(t["small_stem"], image_size)
    mcfg = method_config(str(t["method"]), t)
    backbone = build_backbone(str(t["arch"]), small_stem=small_stem)
    method = METHODS.get(str(t["method"]))(backbone, mcfg)
    return method, {"arch": str(t["arch"]), "small_stem": small_stem, "image_size": image_size, "method_config": mcfg}


def _lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduled_lr(step: int, steps_per_epoch: int, total_epochs: int, starts, warmup: int, base_lr: float) -> float:
    """lr of global `step` when the schedule starts over at the epochs `starts` (warm-up in the first only)."""
    bounds = [int(e) * steps_per_epoch for e in starts] + [total_epochs * steps_per_epoch]
    i = max(j for j in range(len(starts)) if bounds[j] <= step)
    return _lr_at(step - bounds[i], bounds[i + 1] - bounds[i], warmup if i == 0 else 0, base_lr)


def _make_optimizer(method, t: Dict[str, Any]) -> torch.optim.Optimizer:
    # every parameter goes in (frozen ones have no grad and are skipped), so optimiser state
    # survives FUSSL's phase changes and resume
    groups = []
    seen = set()
    for g in method.param_groups():
        groups.append({**g, "params": list(g["params"])})
        seen.update(id(p) for p in g["params"])
    rest = [p for p in method.parameters() if id(p) not in seen]
    if rest:
        groups.append({"params": rest})
    lr, wd = float(t["lr"]), float(t["weight_decay"])
    name = str(t["optimizer"]).lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(t["momentum"]), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    raise UserError(f"teacher.optimizer = {t['optimizer']!r}; use sgd or adamw")


# may change between a run and its resume (train longer, monitor more often)
_RESUMABLE_CHANGES = ("epochs", "knn_every")


def _compatible(saved: Dict[str, Any], cfg: Dict[str, Any]) -> Optional[str]:
    """The config section that differs from the checkpoint's, comparing what the method runs with."""
    def settings(c):
        try:
            s = teacher_settings(c)
        except UserError:  # a checkpoint of a method or key this version no longer has
            return None
        return {k: v for k, v in s.items() if k not in _RESUMABLE_CHANGES}

    if settings(saved) != settings(cfg):
        return "teacher"
    if saved.get("data") != cfg.get("data"):
        return "data"
    if saved.get("run", {}).get("seed") != cfg.get("run", {}).get("seed"):
        return "run.seed"
    return None


def train_teacher(cfg: Dict[str, Any], out_dir: Path, resume: bool = False, *,
                  stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Train the teacher of cfg['teacher'] on cfg['data']; write <out_dir>/teacher.pt after each epoch.

    Returns {'checkpoint', 'knn_acc', 'images_per_s', 'history', 'method'}. With resume=True an
    existing checkpoint in out_dir is continued (the config must match, except teacher.epochs and
    teacher.knn_every); without one it starts fresh. `stop_after=E` returns after epoch E of the
    schedule (train in chunks; resume continues).
    """
    out_dir = Path(out_dir)
    t = teacher_settings(cfg)
    seed = int(cfg["run"]["seed"])
    device = pick_device(str(cfg["run"]["device"]))
    distributed = D.init_from_env(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = D.rank(), D.world_size()
    main = rank == 0
    table = method_table(cfg["teacher"], str(t["method"]))
    if main and table:
        tqdm.write(f"[teacher] [teacher.{t['method']}] sets " + ", ".join(f"{k}={v}" for k, v in table.items())
                   + " (a later --set teacher.KEY=VALUE overrides it)")

    epochs = int(t["epochs"])
    global_batch = int(t["batch_size"])
    if global_batch % world:
        raise UserError(f"teacher.batch_size = {global_batch} does not split over {world} processes; use a multiple of {world}")

    seed_everything(seed)  # identical initialisation on every rank
    method, info = build_method(cfg)
    if distributed:
        method = D.convert_sync_batchnorm(method, device)
    method.to(device)
    optimizer = _make_optimizer(method, t)

    train_set = dataset_from_config(cfg, "train")
    test_set = dataset_from_config(cfg, "heldout")  # val/ of an image folder, else its test/ or a seeded split
    num_classes = int(getattr(train_set, "num_classes", cfg["data"]["num_classes"]))
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch < 1:
        raise UserError(f"teacher.batch_size = {global_batch} is larger than the {len(train_set)} training images; lower it")
    total_steps = epochs * steps_per_epoch
    warmup = int(float(t["warmup_epochs"]) * steps_per_epoch)
    schedule_starts = method.schedule_starts(epochs)
    workers = int(cfg["data"]["workers"])
    plain = eval_transform(info["image_size"])
    eval_bs = max(global_batch, 256)

    ckpt_path = out_dir / CHECKPOINT_NAME
    logger = JsonlLogger(out_dir / LOG_NAME)
    start_epoch, step, history = 0, 0, []
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, "teacher")
        bad = _compatible(ckpt.get("config", {}), cfg)
        if bad:
            raise UserError(f"--resume: {ckpt_path} was trained with a different [{bad}] config; "
                            "resume with the same preset and --set values, or start over with --force")
        method.load_extra_state(ckpt.get("extra_state", {}))
        method.load_state_dict(ckpt["method_state"])
        start_epoch, step, history = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_state"])
    elif main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if logger.path.exists():
            logger.path.unlink()
    if not (resume and ckpt_path.exists()):
        # augmentations draw from the global RNG: give each rank its own stream
        torch.manual_seed(seed * 1000 + 17 + rank)

    def plain_loader(ds, shard: bool) -> DataLoader:
        sampler = DistributedSampler(ds, shuffle=False) if (shard and distributed) else None
        return DataLoader(_Indexed(ds, plain), batch_size=eval_bs // (world if shard else 1), sampler=sampler,
                          shuffle=False, num_workers=workers)

    def monitor() -> Optional[float]:
        if getattr(train_set, "multilabel", False):
            return None  # single-label kNN accuracy has no meaning on multi-hot targets
        if not main:
            return float("nan")
        train_f, train_y = extract_features(method.encoder, plain_loader(train_set, False), device)
        test_f, test_y = extract_features(method.encoder, plain_loader(test_set, False), device)
        return knn_accuracy(train_f, train_y, test_f, test_y, num_classes, int(t["knn_k"]), float(t["knn_t"]))

    model = None
    speeds = []
    knn_every = max(int(t["knn_every"]), 1)
    last_epoch = epochs if stop_after is None else min(epochs, int(stop_after))
    for epoch in range(start_epoch, last_epoch):
        ctx = {"plain_loader": plain_loader(train_set, True), "num_train": len(train_set), "device": device}
        changed = method.prepare_epoch(epoch, epochs, ctx)
        if model is None or changed:
            model = DDP(method, device_ids=[device.index] if device.type == "cuda" else None) if distributed else method
        train_set.transform = None
        loader_set = _Indexed(train_set, method.views(info["image_size"]))
        if distributed:
            sampler = DistributedSampler(loader_set, shuffle=True, seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            gen = torch.Generator().manual_seed(seed * 1000 + epoch)
            sampler = RandomSampler(loader_set, generator=gen)
        loader = DataLoader(loader_set, batch_size=global_batch // world, sampler=sampler, drop_last=True,
                            num_workers=workers, pin_memory=device.type == "cuda")
        method.train()
        loss_sum, n_steps, n_images, busy = 0.0, 0, 0, 0.0
        extra: Dict[str, float] = {}
        bar = tqdm(loader, desc=f"teacher {method.name} epoch {epoch + 1}/{epochs}", disable=None if main else True,
                   leave=False, dynamic_ncols=True)
        t_data = time.perf_counter()
        for views, index, _ in bar:
            views = [v.to(device, non_blocking=True) for v in views]
            index = index.to(device)
            lr = scheduled_lr(step, steps_per_epoch, epochs, schedule_starts, warmup, float(t["lr"]))
            for g in optimizer.param_groups:
                g["lr"] = float(t["lr"]) if g.get("fix_lr") else lr
            loss, logs = model(views, index)
            if not torch.isfinite(loss):
                raise UserError(f"teacher loss became {float(loss)} at epoch {epoch + 1}; lower teacher.lr (now {t['lr']})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            method.after_step(step, total_steps)
            loss_sum += float(loss.detach())
            n_steps += 1
            n_images += views[0].shape[0] * world
            for k, v in logs.items():
                extra[k] = extra.get(k, 0.0) + float(v)
            bar.set_postfix(loss=f"{loss_sum / n_steps:.4f}", lr=f"{lr:.4f}")
        busy = time.perf_counter() - t_data
        bar.close()
        speed = n_images / max(busy, 1e-9)
        speeds.append(speed)
        record = {"epoch": epoch + 1, "loss": loss_sum / max(n_steps, 1), "lr": lr, "images_per_s": round(speed, 2),
                  **{k: v / max(n_steps, 1) for k, v in extra.items()}, **getattr(method, "info", {})}
        if (epoch + 1) % knn_every == 0 or epoch + 1 == epochs:
            record["knn_acc"] = monitor()
        history.append(record)
        if main:
            logger.log(**record)
            _save(ckpt_path, method, optimizer, info, cfg, epoch + 1, step, history)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(f"[teacher] {shown}")
        if distributed:
            torch.distributed.barrier()

    knn = next((h["knn_acc"] for h in reversed(history) if h.get("knn_acc") is not None), None)
    if knn is None:
        knn = monitor()
    ips = sum(speeds) / len(speeds) if speeds else next((h["images_per_s"] for h in reversed(history)), 0.0)
    return {"checkpoint": str(ckpt_path), "knn_acc": knn, "images_per_s": ips, "history": history,
            "method": method.name}


def _save(path: Path, method, optimizer, info, cfg, epoch: int, step: int, history) -> None:
    state = {
        "method": method.name,
        "arch": info["arch"],
        "small_stem": info["small_stem"],
        "image_size": info["image_size"],
        "feature_dim": int(method.feature_dim),
        "backbone": {k: v.detach().cpu() for k, v in method.encoder.state_dict().items()},
        "heads": {name: {k: v.detach().cpu() for k, v in h.state_dict().items()} for name, h in method.heads().items()},
        "method_config": info["method_config"],
        "method_state": {k: v.detach().cpu() for k, v in method.state_dict().items()},
        "extra_state": method.extra_state(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": history,
        "rng_state": torch.get_rng_state(),
    }
    save_checkpoint(path, "teacher", state, cfg)
