"""Semi-supervised fine-tuning (SimCLR / BSSL appendix): backbone + FC trained on 1% or 10% of labels.

Paper setting: 20 epochs, SGD momentum 0.9, backbone lr in {0.1, 0.01, 0.001} x head-lr multiplier
in {1, 10, 100}, lr x0.2 at epochs 12 and 16 (60% and 80%); the best of the 9 runs is reported,
as in the paper (selection on the evaluation split; there is no separate validation set).
The label subset is class-balanced and seeded. Needs a PyTorch model (not an ONNX export).
"""

from __future__ import annotations

import copy
import itertools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..errors import UserError
from ..utils import pick_device
from .context import eval_splits
from .features import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from .metrics import topk_accuracy
from .registry import PROTOCOLS


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of `fraction` of each class (at least one image per class), seeded."""
    if not 0 < fraction <= 1:
        raise UserError(f"eval.semisup_fractions entries must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(out))


def train_transform(input_size: int, scale=(0.08, 1.0)):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(input_size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        f = self.backbone(x)
        return self.head(f.reshape(f.shape[0], -1))


def finetune(backbone: nn.Module, train_set, test_set, num_classes: int, epochs: int, lr: float, head_mult: float,
             milestones: Sequence[float] = (0.6, 0.8), gamma: float = 0.2, batch_size: int = 256,
             momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0, device="cpu", keep=None) -> dict:
    """Fine-tune a copy of `backbone` with a new FC head; return test top-1/top-5 (`keep`: dict receiving "model")."""
    torch.manual_seed(seed)
    backbone = copy.deepcopy(backbone).to(device)
    with torch.no_grad():
        x0, _ = test_set[0]
        backbone.eval()
        dim = int(backbone(x0[None].to(device)).reshape(1, -1).shape[1])
    model = _Classifier(backbone, dim, num_classes).to(device)
    opt = torch.optim.SGD([{"params": model.backbone.parameters(), "lr": lr},
                           {"params": model.head.parameters(), "lr": lr * head_mult}],
                          lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = sorted({max(1, int(round(m * epochs))) for m in milestones if 0 < m < 1})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=gamma)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen, drop_last=False)
    last = float("nan")
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), torch.as_tensor(y).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
        sched.step()
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(test_set, batch_size=batch_size):
            scores.append(model(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    s, lab = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    if keep is not None:
        keep["model"] = model.cpu()
    if not np.isfinite(s).all():
        return {"top1": float("nan"), "top5": float("nan"), "final_loss": last, "diverged": True}
    return {"top1": topk_accuracy(s, lab, 1), "top5": topk_accuracy(s, lab, 5), "final_loss": last, "diverged": False}


@PROTOCOLS.register("semisup")
def run_semisup(ctx) -> dict:
    if ctx.extractor.module is None:
        raise UserError("semisup fine-tunes the network, so it needs a PyTorch student/teacher checkpoint, not an .onnx export")
    name, root = ctx.primary()
    tr, te = eval_splits(name)
    train_feats = ctx.features(name, tr, root)  # labels (cached), without loading images again
    if train_feats.multilabel:
        raise UserError(f"semisup fine-tunes a single-label classifier; {name} is multi-label")
    size = ctx.extractor.input_size
    train_set, _ = ctx.build(name, tr, root, transform=train_transform(size, ctx.get("semisup_crop_scale")))
    test_set, _ = ctx.build(name, te, root, transform=eval_transform(size, ctx.get("crop_pct")))
    fractions = [float(f) for f in ctx.get("semisup_fractions")]
    lrs = [float(v) for v in ctx.get("semisup_lrs")]
    mults = [float(v) for v in ctx.get("semisup_head_mults")]
    kw = dict(epochs=int(ctx.get("semisup_epochs")), milestones=tuple(ctx.get("semisup_milestones")),
              gamma=float(ctx.get("semisup_gamma")), batch_size=int(ctx.get("semisup_batch_size")),
              weight_decay=float(ctx.get("semisup_weight_decay")), seed=ctx.seed,
              device=pick_device(str(ctx.cfg["run"]["device"])))
    per_fraction = {}
    grid = list(itertools.product(fractions, lrs, mults))
    kept = None  # `--save`: (model, run, fraction, labels) of the best run on the first fraction
    for frac, lr, mult in tqdm(grid, desc="semisup", disable=None, leave=False):
        idx = balanced_subset(np.asarray(train_feats.targets), frac, ctx.seed)
        keep = {} if ctx.save is not None and ctx.save.wants("semisup") and frac == fractions[0] else None
        res = finetune(ctx.extractor.module, Subset(train_set, idx.tolist()), test_set, train_feats.num_classes,
                       lr=lr, head_mult=mult, keep=keep, **kw)
        if keep and np.isfinite(res["top1"]) and (kept is None or res["top1"] > kept[1]["top1"]):
            kept = (keep["model"], dict(res, lr=lr, head_mult=mult), frac, len(idx))
        entry = per_fraction.setdefault(str(frac), {"n_labels": int(len(idx)), "runs": []})
        entry["runs"].append(dict(res, lr=lr, head_mult=mult))
    for entry in per_fraction.values():
        ok = [r for r in entry["runs"] if np.isfinite(r["top1"])]
        entry["best"] = max(ok, key=lambda r: r["top1"]) if ok else None
    first = per_fraction[str(fractions[0])]
    value = first["best"]["top1"] if first["best"] else float("nan")
    details = {"per_fraction": per_fraction, "epochs": kw["epochs"], "selection": "best run on the test split (paper)"}
    out = {"metric": f"top1@{fractions[0]:g}", "value": value, "details": details,
           **ctx.source(name, root, train_feats, len(test_set))}
    if ctx.save is not None and ctx.save.wants("semisup"):
        ctx.save.from_semisup(ctx, train_feats.classes, kept, out)
    return out
