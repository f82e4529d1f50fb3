"""BYOL (Grill et al. 2020): online net + predictor regress an EMA target whose momentum follows
tau = 1 - (1 - tau0)(cos(pi k / K) + 1) / 2; asymmetric blur/solarize views."""

from __future__ import annotations

from typing import List

import torch

from bssl.config import option

from .base import METHODS, TeacherMethod, ema_update, frozen_copy
from .heads import mlp
from .losses import byol_regression, byol_tau, pairwise_views_loss


@METHODS.register("byol")
class BYOL(TeacherMethod):
    name = "byol"
    pipeline = "byol"
    OPTIONS = {
        "ema_momentum": option(0.996, help="tau0 of the target EMA, raised to 1 on a cosine", min=0.0, max=1.0),
        "proj_hidden": option(4096, min=1),
        "proj_dim": option(256, min=1),
        "pred_hidden": option(None, int, help="predictor hidden width; default proj_hidden", min=1),
    }

    def __init__(self, backbone, cfg):
        super().__init__(backbone, cfg)
        c = self.cfg
        hidden, dim = int(c["proj_hidden"]), int(c["proj_dim"])
        self.tau0 = float(c["ema_momentum"])
        self.tau = self.tau0
        self.projector = mlp([self.feature_dim, hidden, dim])
        self.predictor = mlp([dim, int(c["pred_hidden"] or hidden), dim])
        self.backbone_t = frozen_copy(self.backbone)
        self.projector_t = frozen_copy(self.projector)

    def heads(self):
        return {"projector": self.projector, "predictor": self.predictor}

    def embed(self, x):
        return self.projector(self.backbone(x))

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        preds = [self.predictor(self.embed(v)) for v in views]
        with torch.no_grad():
            targets = [self.projector_t(self.backbone_t(v)) for v in views[: self.num_views]]
        return pairwise_views_loss(preds, targets, byol_regression), {"tau": self.tau}

    def after_step(self, step: int, total_steps: int) -> None:
        # step counts finished optimiser steps; the update after step k uses tau(k)
        self.tau = byol_tau(step, total_steps, self.tau0)
        ema_update(self.backbone_t, self.backbone, self.tau)
        ema_update(self.projector_t, self.projector, self.tau)
