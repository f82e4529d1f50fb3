"""SimSiam with K augmentations: the K-view baseline of EnSiam. Every view predicts every other
view's stop-gradient projection, D averaged over the K(K-1) ordered pairs."""

from __future__ import annotations

from typing import List

import torch

from bssl.config import option
from bssl.errors import UserError

from .base import METHODS
from .losses import negative_cosine, pairwise_views_loss
from .simsiam import SiameseBase


@METHODS.register("simsiam-kaug")
class SimSiamKAug(SiameseBase):
    name = "simsiam-kaug"
    OPTIONS = {**SiameseBase.OPTIONS, "num_views": option(4, help="K views per image", min=2)}

    def __init__(self, backbone, cfg):
        if int(cfg.get("num_views", 4)) < 2:
            raise UserError(f"teacher.num_views (K) = {cfg.get('num_views')}: simsiam-kaug needs K >= 2 views")
        super().__init__(backbone, cfg)

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        zs, ps = self._project(views)
        return pairwise_views_loss(ps, zs[: self.num_views], negative_cosine), {}
