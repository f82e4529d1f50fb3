"""Baselines: direct self-supervised learning on the binary student ("tuned MoCo v2" / BYOL rows).

The teacher methods (bssl.teachers: MoCo v2 with its queue and momentum
encoder, BYOL with its predictor and EMA target, SimCLR with its in-batch negatives) are applied unchanged to the student's feature
extractor k, wrapped as their backbone; no FP teacher is involved.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from ..config import option
from .base import METHODS, DistillMethod


class StudentTrunk(nn.Module):
    """Exposes k(x) = student.features(x) as a backbone with `.feature_dim` for bssl.teachers methods."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        self.feature_dim = int(student.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.features(x)


class _DirectSSL(DistillMethod):
    needs_teacher = False
    needs_global_bn = True  # SimCLR's and MoCo's negatives, BYOL's BN-dependent targets (as the teachers train)
    ssl_name = ""
    # unset: the [teacher] section's value (the run's tuned SSL setting), then the method's default
    OPTIONS = {
        **DistillMethod.OPTIONS,
        "queue_size": option(None, int, help="MoCo queue of a direct baseline; default [teacher]'s", min=1),
        "ema_momentum": option(None, float, help="EMA momentum of a direct baseline; default [teacher]'s",
                               min=0.0, max=1.0),
        "proj_hidden": option(None, int, help="projector width of a direct baseline; default [teacher]'s", min=1),
        "proj_dim": option(None, int, help="projection size of a direct baseline; default [teacher]'s", min=1),
        "pred_hidden": option(None, int, help="predictor width of a direct baseline; default [teacher]'s", min=1),
    }

    def __init__(self, student: nn.Module, teacher_info: Dict[str, Any], dcfg: Dict[str, Any], num_labels: int = 0):
        super().__init__(student, teacher_info, dcfg, num_labels)
        from bssl.teachers import METHODS as SSL_METHODS, method_config

        # the [teacher] section's method keys (queue, momentum, head sizes: the run's tuned SSL setting),
        # then [distill] keys of the same names, then a [distill.<name>] table
        keys = ("queue_size", "ema_momentum", "temperature", "proj_hidden", "proj_dim", "pred_hidden")
        tsec = dict(teacher_info.get("ssl_config", {}))
        opts = {k: tsec[k] for k in keys if tsec.get(k) is not None}
        opts.update({k: dcfg[k] for k in keys if dcfg.get(k) is not None and k != "temperature"})
        opts.update(dcfg.get(self.ssl_name, {}) if isinstance(dcfg.get(self.ssl_name), dict) else {})
        self.ssl = SSL_METHODS.get(self.ssl_name)(StudentTrunk(student), method_config(self.ssl_name, opts))

    def loss(self, student, teacher, views, labels, step, total_steps):
        index = torch.arange(views[0].shape[0], device=views[0].device)
        loss, logs = self.ssl(views[:2], index)
        return {"loss": loss, **{k: torch.tensor(float(v)) for k, v in logs.items()}}

    def after_step(self, student, step, total_steps):
        self.ssl.after_step(step + 1, total_steps)

    def grad_groups(self, student):
        cls_ids = {id(p) for p in student.classifier.parameters()}
        own = {id(p) for p in student.parameters()}
        heads = [p for p in self.ssl.parameters() if p.requires_grad and id(p) not in own]
        return {"features": [p for p in student.parameters() if id(p) not in cls_ids], "ssl_heads": heads}


@METHODS.register("direct-mocov2")
class DirectMoCoV2(_DirectSSL):
    ssl_name = "mocov2"
    pipeline = "mocov2"


@METHODS.register("direct-byol")
class DirectBYOL(_DirectSSL):
    ssl_name = "byol"
    pipeline = "byol"


@METHODS.register("direct-simclr")
class DirectSimCLR(_DirectSSL):
    """The contrastive method that does leave the floor at CPU scale (the cpu preset's teacher), so
    that BSSL is compared with the strongest direct-SSL baseline, not only with ones that do not learn."""
    ssl_name = "simclr"
    pipeline = "mocov2"
