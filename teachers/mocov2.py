"""MoCo v2 (Chen et al. 2020): momentum key encoder, queue of negatives, MLP head, temperature T."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from bssl.config import option
from bssl.errors import UserError

from .base import METHODS, TeacherMethod, ema_update, frozen_copy
from .distributed import gather
from .heads import mlp
from .losses import info_nce


@METHODS.register("mocov2")
class MoCoV2(TeacherMethod):
    name = "mocov2"
    pipeline = "mocov2"
    OPTIONS = {
        "queue_size": option(65536, help="negatives kept in the queue", min=1),
        "ema_momentum": option(0.999, help="momentum of the key encoder", min=0.0, max=1.0),
        "temperature": option(0.2, min=0.0, min_exclusive=True),
        "proj_hidden": option(2048, min=1),
        "proj_dim": option(128, min=1),
        "symmetric": option(False, help="symmetrised loss (both views as query)"),
    }

    def __init__(self, backbone, cfg):
        super().__init__(backbone, cfg)
        c = self.cfg
        if int(c["queue_size"]) < 1:
            raise UserError(f"teacher.queue_size = {c['queue_size']}: the MoCo queue needs at least one entry")
        self.momentum = float(c["ema_momentum"])
        self.temperature = float(c["temperature"])
        self.symmetric = bool(c["symmetric"])
        self.projector = mlp([self.feature_dim, int(c["proj_hidden"]), int(c["proj_dim"])], bn=False)
        self.backbone_k = frozen_copy(self.backbone)
        self.projector_k = frozen_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(int(c["queue_size"]), int(c["proj_dim"])), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def heads(self):
        return {"projector": self.projector}

    def embed(self, x):
        return self.projector(self.backbone(x))

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        if self.symmetric:
            query_views, key_views = views, views[: self.num_views]
        else:  # official MoCo: key from view 1, queries from the other views; view 1 is never a query
            query_views, key_views = [v for i, v in enumerate(views) if i != 1], views[1:2]
        qs = [F.normalize(self.embed(v), dim=1) for v in query_views]
        with torch.no_grad():
            ks = [F.normalize(self.projector_k(self.backbone_k(v)), dim=1) for v in key_views]
        queue = self.queue.clone().detach()
        if self.symmetric:
            terms = [info_nce(q, k, queue, self.temperature) for i, q in enumerate(qs) for j, k in enumerate(ks) if i != j]
        else:
            terms = [info_nce(q, ks[0], queue, self.temperature) for q in qs]
        loss = torch.stack(terms).mean()
        if self.training:
            self._enqueue(torch.cat(ks, dim=0))
        return loss, {}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        keys = gather(keys)  # every rank's keys, in rank order, so all queues stay identical
        size = self.queue.shape[0]
        keys = keys[-size:]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)  # keys come in bf16/fp16 under autocast; the queue stays fp32
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.backbone_k, self.backbone, self.momentum)
        ema_update(self.projector_k, self.projector, self.momentum)
