"""EnSiam: SimSiam with K views whose target is the stop-gradient ensemble mean of the K
projections, loss = mean_k D(p_k, stopgrad(mean_j z_j)). Local crops (multi-crop) only predict."""

from __future__ import annotations

from typing import List

import torch

from bssl.config import option
from bssl.errors import UserError

from .base import METHODS
from .losses import ensiam_loss
from .simsiam import SiameseBase


@METHODS.register("ensiam")
class EnSiam(SiameseBase):
    name = "ensiam"
    OPTIONS = {**SiameseBase.OPTIONS, "num_views": option(4, help="K views per image", min=2)}

    def __init__(self, backbone, cfg):
        if int(cfg.get("num_views", 4)) < 2:
            raise UserError(f"teacher.num_views (K) = {cfg.get('num_views')}: EnSiam needs an ensemble of K >= 2 views")
        super().__init__(backbone, cfg)

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        zs, ps = self._project(views)
        return ensiam_loss(ps, zs[: self.num_views]), {}
