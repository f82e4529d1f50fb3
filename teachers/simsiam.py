"""SimSiam (Chen & He 2021): 3-layer projector ending in BN(affine=False), bottleneck predictor,
stop-gradient, predictor trained with a fixed learning rate."""

from __future__ import annotations

from typing import List

import torch

from bssl.config import option

from .base import METHODS, TeacherMethod
from .heads import mlp
from .losses import negative_cosine, pairwise_views_loss


class SiameseBase(TeacherMethod):
    pipeline = "simsiam"
    OPTIONS = {
        "proj_hidden": option(2048, min=1),
        "proj_dim": option(2048, min=1),
        "pred_hidden": option(None, int, help="predictor bottleneck; default proj_dim / 4", min=1),
        "fix_pred_lr": option(True, help="the predictor keeps its lr (no cosine decay)"),
    }

    def __init__(self, backbone, cfg):
        super().__init__(backbone, cfg)
        c = self.cfg
        hidden, dim = int(c["proj_hidden"]), int(c["proj_dim"])
        self.projector = mlp([self.feature_dim, hidden, hidden, dim], last_bn=True, last_bn_affine=False)
        # bottleneck: 2048-512-2048 in the paper, i.e. a quarter of the projection width
        self.predictor = mlp([dim, int(c["pred_hidden"] or max(dim // 4, 1)), dim])

    def heads(self):
        return {"projector": self.projector, "predictor": self.predictor}

    def embed(self, x):
        return self.projector(self.backbone(x))

    def param_groups(self):
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        pred_ids = {id(p) for p in pred}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in pred_ids]
        return [{"params": rest}, {"params": pred, "fix_lr": self.cfg["fix_pred_lr"]}]

    def _project(self, views):
        zs = [self.embed(v) for v in views]
        return zs, [self.predictor(z) for z in zs]


@METHODS.register("simsiam")
class SimSiam(SiameseBase):
    name = "simsiam"

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        zs, ps = self._project(views)
        return pairwise_views_loss(ps, zs[: self.num_views], negative_cosine), {}
