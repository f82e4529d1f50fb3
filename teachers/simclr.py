"""SimCLR (Chen et al. 2020): one encoder, 2-layer MLP projector with BN, NT-Xent over the global
batch (every other view in the batch is a negative; no queue, no momentum encoder).

Not one of the BSSL paper's teachers. It is here because its negatives come from the current
encoder, so it leaves the random-init floor within the few hundred steps of a CPU-sized run, where
MoCo v2's momentum encoder and queue (and the non-contrastive BYOL/SimSiam) do not (docs/distill.md).
"""

from __future__ import annotations

from typing import List

import torch

from bssl.config import option

from .base import METHODS, TeacherMethod
from .distributed import gather
from .heads import mlp
from .losses import nt_xent


@METHODS.register("simclr")
class SimCLR(TeacherMethod):
    name = "simclr"
    pipeline = "mocov2"  # crop, colour jitter, grey, blur, flip: SimCLR's own augmentations
    OPTIONS = {
        "temperature": option(0.2, min=0.0, min_exclusive=True),
        "proj_hidden": option(2048, min=1),
        "proj_dim": option(128, min=1),
    }

    def __init__(self, backbone, cfg):
        super().__init__(backbone, cfg)
        c = self.cfg
        self.temperature = float(c["temperature"])
        self.projector = mlp([self.feature_dim, int(c["proj_hidden"]), int(c["proj_dim"])])

    def heads(self):
        return {"projector": self.projector}

    def embed(self, x):
        return self.projector(self.backbone(x))

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        # the global batch on every rank: each rank computes the same loss, and the all-reduce in
        # gather's backward turns DDP's gradient average into the gradient of that one loss
        zs = [gather(self.embed(v)) for v in views]
        return nt_xent(zs, self.temperature), {}
