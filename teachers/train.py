"""Teacher training loop: `train_teacher(cfg, out_dir, resume)`.

Single process by default; under `torchrun --nproc_per_node N` it joins the process group
(gloo on CPU, nccl on GPU), wraps the method in DistributedDataParallel with synchronised
BatchNorm, splits the global batch `teacher.batch_size` over the ranks and `teacher.accumulate`
steps, and writes checkpoints from rank 0. The optimisation step, optimiser, lr schedule and
mixed precision are bssl.train's. Checkpoints are written after every epoch and resume exactly
(every rank's RNG streams included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from bssl.config import teacher_settings
from bssl.data import dataset_from_config
from bssl.data.augment import eval_transform
from bssl.errors import UserError
from bssl.utils import JsonlLogger, load_checkpoint, pick_device, save_checkpoint, seed_everything

from bssl.train import distributed as D
from bssl.train import (Stepper, all_rng_states, batch_plan, build_optimizer, check_precision, check_world,
                        config_mismatch, loader_workers, make_loader, memory_format, restarted_lr_factor,
                        restore_rank_rng, train_seconds)
from bssl.train.state import changed_keys
from bssl.train import steps as train_steps

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


def make_optimizer(method, t: Dict[str, Any]) -> torch.optim.Optimizer:
    """bssl.train's optimiser over the method's groups; weight decay on every parameter, as the
    methods' reference code does (LARS excludes biases and BN itself)."""
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
    return build_optimizer(groups, t, section="teacher", exclude_1d=False)


# may change between a run and its resume (train longer, monitor more often)
_RESUMABLE_CHANGES = ("epochs", "knn_every")


def _compatible(saved: Dict[str, Any], cfg: Dict[str, Any]) -> Optional[str]:
    """What differs from the checkpoint's config ('[teacher] config (lr: ...)'), comparing what the
    method runs with; None when nothing does."""
    def settings(c):
        try:
            s = teacher_settings(c)
        except UserError:  # a checkpoint of a method or key this version no longer has
            return None
        return {k: v for k, v in s.items() if k not in _RESUMABLE_CHANGES}

    a, b = settings(saved), settings(cfg)
    if a != b:
        return "[teacher] config" + changed_keys(a or {}, b or {})
    return config_mismatch(saved, cfg, ("data",))


def train_teacher(cfg: Dict[str, Any], out_dir: Path, resume: bool = False, *,
                  stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Train the teacher of cfg['teacher'] on cfg['data']; write <out_dir>/teacher.pt after each epoch.

    Returns {'checkpoint', 'knn_acc', 'images_per_s', 'history', 'method', 'train_seconds'} (the epochs'
    time over every invocation of a resumed run). With resume=True an
    existing checkpoint in out_dir is continued (the config and the number of processes must match,
    except teacher.epochs and teacher.knn_every); without one it starts fresh. `stop_after=E`
    returns after epoch E of the schedule (train in chunks; resume continues).
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
    epochs = int(t["epochs"])
    ckpt_path = out_dir / CHECKPOINT_NAME

    def check():
        plan = batch_plan("teacher", int(t["batch_size"]), int(t["accumulate"]), world)
        precision = check_precision("teacher", str(t["precision"]), device)
        ckpt = None
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path, "teacher")
            bad = _compatible(ckpt.get("config", {}), cfg)
            if bad:
                raise UserError(f"--resume: {ckpt_path} was trained with a different {bad}; "
                                "resume with the same preset and --set values, or start over with --force")
            check_world(ckpt_path, ckpt.get("world_size"), world)
        return plan, precision, ckpt

    plan, precision, ckpt = D.agree(check)
    table = method_table(cfg["teacher"], str(t["method"]))
    if main and table:
        tqdm.write(f"[teacher] [teacher.{t['method']}] sets " + ", ".join(f"{k}={v}" for k, v in table.items())
                   + " (a later --set teacher.KEY=VALUE overrides it)")
    global_batch = plan.global_batch

    seed_everything(seed)  # identical initialisation on every rank
    method, info = build_method(cfg)
    if distributed:
        method = D.convert_sync_batchnorm(method, device)
    fmt = memory_format(t["channels_last"], device, precision)
    method.to(device, memory_format=fmt)
    optimizer = make_optimizer(method, t)

    train_set = dataset_from_config(cfg, "train")
    test_set = dataset_from_config(cfg, "heldout")  # val/ of an image folder, else its test/ or a seeded split
    num_classes = int(getattr(train_set, "num_classes", cfg["data"]["num_classes"]))
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch < 1:
        raise UserError(f"teacher.batch_size = {global_batch} is larger than the {len(train_set)} training images; lower it")
    total_steps = epochs * steps_per_epoch
    warmup = int(float(t["warmup_epochs"]) * steps_per_epoch)
    schedule_starts = method.schedule_starts(epochs)
    workers = loader_workers(cfg["data"]["workers"], device)
    plain = eval_transform(info["image_size"])
    eval_bs = max(global_batch, 256)
    stepper = Stepper(optimizer, list(method.parameters()), device=device, precision=precision,
                      clip=float(t["grad_clip"]), base_lr=float(t["lr"]),
                      lr_factor=lambda i: restarted_lr_factor(i, steps_per_epoch, epochs, schedule_starts, warmup))

    logger = JsonlLogger(out_dir / LOG_NAME)
    start_epoch, step, history = 0, 0, []
    if ckpt is not None:
        method.load_extra_state(ckpt.get("extra_state", {}))
        method.load_state_dict(ckpt["method_state"])
        start_epoch, step, history = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
        optimizer.load_state_dict(ckpt["optimizer"])
        stepper.load_state_dict(ckpt.get("trainer", {}))
        restore_rank_rng(ckpt["rng_state"])
    else:
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if logger.path.exists():
                logger.path.unlink()
        # augmentations draw from the global RNG: give each rank its own stream
        torch.manual_seed(seed * 1000 + 17 + rank)
    D.barrier()

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

    def forward(model, batch):
        views, index, _ = batch
        loss, logs = model([v.to(device, non_blocking=True, memory_format=fmt) for v in views], index.to(device))
        return {"loss": loss, **logs}

    model = None
    speeds = []
    knn_every = max(int(t["knn_every"]), 1)
    last_epoch = epochs if stop_after is None else min(epochs, int(stop_after))
    for epoch in range(start_epoch, last_epoch):
        t_epoch = time.perf_counter()
        ctx = {"plain_loader": plain_loader(train_set, True), "num_train": len(train_set), "device": device}
        changed = method.prepare_epoch(epoch, epochs, ctx)
        if model is None or changed:
            model = DDP(method, device_ids=[device.index] if device.type == "cuda" else None) if distributed else method
        train_set.transform = None
        loader_set = _Indexed(train_set, method.views(info["image_size"]))
        loader = make_loader(loader_set, plan, seed * 1000, epoch, workers=workers, pin_memory=device.type == "cuda")
        method.train()
        sums: Dict[str, float] = {}
        n_steps, n_images = 0, 0
        bar = tqdm(train_steps(loader, plan.accumulate), total=steps_per_epoch, disable=None if main else True,
                   desc=f"teacher {method.name} epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
        t_data = time.perf_counter()
        for micro in bar:
            try:
                rec = stepper.step(model, step, micro, forward)
            except FloatingPointError as exc:
                raise UserError(f"teacher {exc} at epoch {epoch + 1}; lower teacher.lr (now {t['lr']})") from None
            step += 1
            method.after_step(step, total_steps)
            for k, v in rec.items():
                sums[k] = sums.get(k, 0.0) + v
            n_steps += 1
            n_images += global_batch
            bar.set_postfix(loss=f"{sums['loss'] / n_steps:.4f}", lr=f"{rec['lr']:.4f}")
        busy = time.perf_counter() - t_data
        bar.close()
        speed = n_images / max(busy, 1e-9)
        speeds.append(speed)
        lr = rec["lr"] if n_steps else float("nan")
        record = {"epoch": epoch + 1, "loss": sums.get("loss", 0.0) / max(n_steps, 1), "lr": lr,
                  "images_per_s": round(speed, 2),
                  **{k: v / max(n_steps, 1) for k, v in sums.items() if k not in ("loss", "lr")},
                  **getattr(method, "info", {})}
        if (epoch + 1) % knn_every == 0 or epoch + 1 == epochs:
            record["knn_acc"] = monitor()
        record["seconds"] = round(time.perf_counter() - t_epoch, 2)
        history.append(record)
        rng = all_rng_states()
        if main:
            logger.log(**record)
            _save(ckpt_path, method, optimizer, stepper, info, cfg, epoch + 1, step, history, rng, world)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(f"[teacher] {shown}")
        D.barrier()

    knn = next((h["knn_acc"] for h in reversed(history) if h.get("knn_acc") is not None), None)
    if knn is None:
        knn = monitor()
    ips = sum(speeds) / len(speeds) if speeds else next((h["images_per_s"] for h in reversed(history)), 0.0)
    return {"checkpoint": str(ckpt_path), "knn_acc": knn, "images_per_s": ips, "history": history,
            "method": method.name, "train_seconds": train_seconds(history)}


def teacher_weights(method, info) -> Dict[str, Any]:
    """What distillation and evaluation read from a teacher checkpoint: backbone, heads and their shapes."""
    return {
        "method": method.name,
        "arch": info["arch"],
        "small_stem": info["small_stem"],
        "image_size": info["image_size"],
        "feature_dim": int(method.feature_dim),
        "backbone": {k: v.detach().cpu() for k, v in method.encoder.state_dict().items()},
        "heads": {name: {k: v.detach().cpu() for k, v in h.state_dict().items()} for name, h in method.heads().items()},
    }


def _save(path: Path, method, optimizer, stepper, info, cfg, epoch: int, step: int, history, rng, world: int) -> None:
    state = {
        **teacher_weights(method, info),
        "method_config": info["method_config"],
        "method_state": {k: v.detach().cpu() for k, v in method.state_dict().items()},
        "extra_state": method.extra_state(),
        "optimizer": optimizer.state_dict(),
        "trainer": stepper.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": history,
        "rng_state": rng,  # one entry per rank
        "world_size": world,
    }
    save_checkpoint(path, "teacher", state, cfg)
