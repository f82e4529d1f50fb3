"""Linear probe: a fully connected layer trained on frozen (cached) features.

Paper schedule (Goyal et al. / MoCo): SGD, lr 30, momentum 0.9, no weight decay, 100 epochs,
lr x0.1 at 60% and 80% of training. Features are cached, so training sees no augmentation
(random crops/flips of the original protocol are not applied).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from .features import Features
from .metrics import mean_average_precision, topk_accuracy, voc_labels
from .registry import PROTOCOLS

NORMS = ("none", "standardize", "l2")


def _chunked_stats(x: np.ndarray, chunk: int = 65536) -> tuple:
    """Per-dimension mean and std in float64, reading a (memory-mapped) array chunk by chunk."""
    total = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        block = np.asarray(x[i:i + chunk], dtype=np.float64)
        total = total[0] + block.sum(0), total[1] + (block ** 2).sum(0)
    mean = total[0] / len(x)
    std = np.sqrt(np.maximum(total[1] / len(x) - mean ** 2, 0)) + 1e-6
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


def _batch(x: np.ndarray, idx: np.ndarray, norm: str, stats) -> torch.Tensor:
    """Rows `idx` of a (possibly memory-mapped) feature array as a normalised float tensor."""
    t = torch.from_numpy(np.array(x[idx], dtype=np.float32))
    if norm == "l2":
        return F.normalize(t, dim=1)
    if norm == "standardize":  # a BatchNorm without affine, frozen at the train statistics
        return (t - stats[0]) / stats[1]
    return t


def train_linear(train: Features, test: Features, epochs: int = 100, lr: float = 30.0, momentum: float = 0.9,
                 weight_decay: float = 0.0, milestones: Sequence[float] = (0.6, 0.8), batch_size: int = 256,
                 norm: str = "none", seed: int = 0, device: str = "cpu", keep: Optional[dict] = None) -> dict:
    """Train an FC layer on `train` features and report top-1/top-5 (or mAP for multi-label) on `test`.

    `keep`: a dict that receives the trained layer ("fc", on CPU) and the standardisation ("stats": mean, std or None)."""
    if norm not in NORMS:
        raise UserError(f"eval.linear_norm {norm!r} is unknown; use one of {', '.join(NORMS)}")
    if epochs < 1:
        raise UserError(f"eval.linear_epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    # features stay where they are (memory-mapped cache): batches are read and normalised on the fly
    x_train, x_test = train.features, test.features
    stats = _chunked_stats(x_train) if norm == "standardize" else None
    multilabel = train.multilabel
    y_train = np.asarray(train.targets)
    fc = nn.Linear(int(x_train.shape[1]), train.num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        nn.init.normal_(fc.weight, std=0.01)  # MoCo's linear-probe init
        nn.init.zeros_(fc.bias)
    fc.to(device)
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = sorted({max(1, int(round(m * epochs))) for m in milestones if 0 < m < 1})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=0.1)
    history = []
    for epoch in tqdm(range(epochs), desc="linear", disable=None, leave=False):
        perm = torch.randperm(len(x_train), generator=gen).numpy()
        total, count = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            if isinstance(x_train, np.memmap):
                idx = np.sort(idx)  # same batch, sequential reads
            logits = fc(_batch(x_train, idx, norm, stats).to(device))
            target = torch.from_numpy(y_train[idx]).to(device)
            loss = (F.binary_cross_entropy_with_logits(logits, target.float()) if multilabel
                    else F.cross_entropy(logits, target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        history.append(total / count)
    if not np.isfinite(history[-1]):
        raise UserError(f"linear probe diverged (loss {history[-1]}) at lr {lr}; lower eval.linear_lr or set "
                        f"eval.linear_norm=standardize")
    with torch.no_grad():
        scores = torch.cat([fc(_batch(x_test, np.arange(i, min(i + 4096, len(x_test))), norm, stats).to(device)).cpu()
                            for i in range(0, len(x_test), 4096)]).numpy()
    if keep is not None:
        keep.update(fc=fc.cpu(), stats=stats)
    details = {"epochs": epochs, "lr": lr, "milestones": steps, "norm": norm, "batch_size": batch_size,
               "final_train_loss": history[-1], "loss_history": history,
               "n_train": len(x_train), "n_test": len(x_test), "augmentation": "none (cached features)"}
    if multilabel:
        m, aps = mean_average_precision(scores, voc_labels(test.targets, test.difficult))
        details["per_class_ap"] = dict(zip(test.classes, aps.tolist()))
        return {"metric": "mAP", "value": m, "details": details}
    details["top5"] = topk_accuracy(scores, test.targets, 5)
    return {"metric": "top1", "value": topk_accuracy(scores, test.targets, 1), "details": details}


def linear_kwargs(ctx) -> dict:
    return dict(epochs=int(ctx.get("linear_epochs")), lr=float(ctx.get("linear_lr")),
                momentum=float(ctx.get("linear_momentum")), weight_decay=float(ctx.get("linear_weight_decay")),
                milestones=tuple(ctx.get("linear_milestones")),
                batch_size=int(ctx.get("linear_batch_size")), norm=str(ctx.get("linear_norm")),
                seed=ctx.seed)


@PROTOCOLS.register("linear")
def run_linear(ctx) -> dict:
    name, root = ctx.primary()
    train, test = ctx.pair(name, root)
    keep = {} if ctx.save is not None and ctx.save.wants("linear") else None
    res = dict(train_linear(train, test, **linear_kwargs(ctx), keep=keep), **ctx.source(name, root, train, test))
    if keep is not None:  # `--save`: the student frozen with this head, standardisation folded in
        ctx.save.from_linear(ctx, train, test, keep["fc"], keep["stats"], res["details"]["norm"], res)
    return res
