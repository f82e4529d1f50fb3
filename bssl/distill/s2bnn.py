"""Baseline: S2-BNN-style distillation (Shen et al. 2021): KL to the teacher's fixed SSL head.

The teacher's projector (stored in its bssl checkpoint) stays frozen on top of h; the student gets
its own MLP head to the projector's output size and matches the teacher's softened distribution
over those outputs, views crossed as in BSSL.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from ..config import option
from ..errors import UserError
from .base import METHODS, DistillMethod, teacher_features
from .heads import MLPHead
from .losses import kl_distill


def rebuild_sequential(state: Dict[str, torch.Tensor]) -> nn.Sequential:
    """Rebuild an MLP (Linear / BatchNorm1d / ReLU Sequential) from its state dict alone."""
    idx = sorted({int(k.split(".")[0]) for k in state})
    layers = []
    for i in range(idx[-1] + 1):
        w = state.get(f"{i}.weight")
        if w is not None and w.ndim == 2:
            layers.append(nn.Linear(w.shape[1], w.shape[0], bias=f"{i}.bias" in state))
        elif f"{i}.running_mean" in state:
            layers.append(nn.BatchNorm1d(state[f"{i}.running_mean"].shape[0], affine=w is not None))
        else:
            layers.append(nn.ReLU())
    seq = nn.Sequential(*layers)
    seq.load_state_dict(state, strict=True)
    return seq


@METHODS.register("s2bnn")
class S2BNN(DistillMethod):
    OPTIONS = {
        **DistillMethod.OPTIONS,
        "classifier_hidden": option(2048, help="hidden width of the student's MLP head", min=1),
        "temperature": option(0.2, help="T of the KL to the teacher's SSL head", min=0.0, min_exclusive=True),
    }

    def __init__(self, student: nn.Module, teacher_info: Dict[str, Any], dcfg: Dict[str, Any], num_labels: int = 0):
        super().__init__(student, teacher_info, dcfg, num_labels)
        from bssl.teachers import load_teacher_heads

        path = teacher_info.get("path")
        heads = load_teacher_heads(path) if path else {}
        if "projector" not in heads:
            raise UserError(f"s2bnn needs the teacher's SSL projector, and teacher {path} carries none; "
                            "use a bssl teacher checkpoint (MoCo v2, BYOL, SimSiam) or --method bssl")
        head = rebuild_sequential({k: v.float() for k, v in heads["projector"].items()})
        head.requires_grad_(False)
        # kept outside the module tree: frozen, in eval mode, never in the optimiser or state
        self._teacher_head = [head.eval()]
        out_dim = [m for m in head if isinstance(m, nn.Linear)][-1].out_features
        self.head = MLPHead(int(student.feature_dim), out_dim, int(self.dcfg["classifier_hidden"]))
        self.temperature = float(self.dcfg["temperature"])

    def _apply(self, fn, *args, **kwargs):
        self._teacher_head[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def loss(self, student, teacher, views, labels, step, total_steps):
        h = teacher_features(teacher, views)
        with torch.no_grad():
            t = [self._teacher_head[0].eval()(x) for x in h]
        s = list(self.head(student.features(torch.cat(views))).chunk(len(views)))
        kl = 0.5 * (kl_distill(s[0], t[1], self.temperature) + kl_distill(s[1], t[0], self.temperature))
        return {"loss": kl, "kl": kl}
