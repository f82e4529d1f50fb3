"""FUSSL: a training protocol around any base method.

Phase 1 trains an ensemble of m identically initialised blocks of the base method, each block on
its own pair of views. Then every block labels the un-augmented training images with the argmax
of its projector; a strict majority gives a hard label, otherwise a soft label over the blocks'
votes (fuzzy labels). Phase 2 trains the block with the lowest pseudo-label error with
cross-entropy on those labels: first all layers, then only the last stage and the projector.
Options: m (fussl_m), soft labels only (fussl_soft_only), no freezing (fussl_freeze = false).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List

import torch
import torch.nn as nn

from bssl.config import option
from bssl.data.augment import method_views, view_overrides
from bssl.errors import UserError

from . import distributed as D
from .base import COMMON_DEFAULTS, METHODS, TeacherMethod
from .losses import fuzzy_labels, pseudo_label_error, soft_cross_entropy


@METHODS.register("fussl")
class FUSSL(TeacherMethod):
    name = "fussl"
    OPTIONS = {
        "fussl_base": option("simsiam", help="the base method of the ensemble blocks"),
        "fussl_m": option(3, help="blocks in the ensemble", min=2),
        "fussl_phase2_epochs": option(None, int, help="epochs of phase 2; default 20% of the epochs", min=1),
        "fussl_soft_only": option(False, help="soft labels only (no majority hard labels)"),
        "fussl_freeze": option(True, help="second half of phase 2 trains only the last stage and projector"),
        "fussl_last_stage": option("layer4", help="the backbone child trained in the frozen part of phase 2"),
    }

    @classmethod
    def option_keys(cls):
        # a [teacher.fussl] table also tunes the base method, whichever it is
        keys = {}
        for name in METHODS.names():
            if name != cls.name:
                keys.update(METHODS.get(name).option_keys())
        return {**keys, **cls.OPTIONS}

    @classmethod
    def check_config(cls, settings):
        base = str(settings["fussl_base"])
        if base == cls.name:
            raise UserError("teacher.fussl_base = 'fussl': the base method must be a plain method (mocov2, byol, simsiam, ...)")
        if base not in METHODS.names():
            raise UserError(f"teacher.fussl_base = {base!r} is not a teacher method; known: {', '.join(METHODS.names())}")
        cls.plan(settings.get("fussl_phase2_epochs"), int(settings["epochs"]), bool(settings["fussl_freeze"]))

    def __init__(self, backbone, cfg):
        nn.Module.__init__(self)  # the blocks own the backbones; no shared `self.backbone`
        self.cfg = dict(cfg)
        c = self.cfg
        self.m = int(c["fussl_m"])
        if self.m < 2:
            raise UserError(f"teacher.fussl_m = {c['fussl_m']}: FUSSL needs an ensemble of m >= 2 blocks")
        base_name = str(c["fussl_base"])
        if base_name == "fussl":
            raise UserError("teacher.fussl_base = 'fussl': the base method must be a plain method (mocov2, byol, simsiam, ...)")
        base_cls = METHODS.get(base_name)
        base_cfg = {**COMMON_DEFAULTS, **base_cls.defaults()}
        base_cfg.update({k: v for k, v in c.items() if k in base_cls.OPTIONS or k in COMMON_DEFAULTS})
        base_cfg.update({"num_views": 2, "multicrop_local": 0})
        first = base_cls(backbone, base_cfg)
        # identical initialisation: every block starts as a copy of the first
        self.blocks = nn.ModuleList([first] + [copy.deepcopy(first) for _ in range(self.m - 1)])
        self.feature_dim = first.feature_dim
        self.base_name = base_name
        self.pipeline = base_cls.pipeline
        self.num_views = 2
        self.soft_only = bool(c["fussl_soft_only"])
        self.freeze = bool(c["fussl_freeze"])
        self.last_stage = str(c["fussl_last_stage"])
        if not hasattr(first.backbone, self.last_stage):
            raise UserError(f"teacher.fussl_last_stage = {self.last_stage!r} is not a child of the {type(first.backbone).__name__} backbone")
        self._trainable = {id(p) for p in self.parameters() if p.requires_grad}
        self.phase = None
        self.chosen = None
        self.labels = None  # (N, classes) pseudo-labels; saved through extra_state
        self.info: Dict[str, Any] = {}

    @property
    def encoder(self) -> nn.Module:
        return self.blocks[self.chosen if self.chosen is not None else 0].backbone

    def heads(self):
        block = self.blocks[self.chosen if self.chosen is not None else 0]
        return block.heads()

    def embed(self, x):
        return self.blocks[self.chosen if self.chosen is not None else 0].embed(x)

    def views(self, image_size: int):
        n = 2 * self.m if self.phase in (None, "1") else 2
        return method_views(self.pipeline, image_size, n, **view_overrides(self.cfg))

    def param_groups(self):
        groups: List[Dict[str, Any]] = []
        for block in self.blocks:
            groups.extend(block.param_groups())
        return groups

    @staticmethod
    def plan(phase2_epochs, total_epochs: int, freeze: bool):
        """(phase-1 epochs, phase-2 epochs with all layers, phase-2 epochs with the last stage only)."""
        if total_epochs < 2:
            raise UserError(f"teacher.epochs = {total_epochs}: FUSSL needs at least 2 epochs (phase 1 and phase 2); "
                            "set teacher.epochs (or [teacher.fussl] epochs) to 2 or more")
        p2 = max(1, round(0.2 * total_epochs)) if phase2_epochs is None else int(phase2_epochs)
        if not 0 < p2 < total_epochs:
            raise UserError(f"teacher.fussl_phase2_epochs = {p2} must leave phase 1 at least one of the "
                            f"{total_epochs} epochs and be >= 1")
        full = math.ceil(p2 / 2) if freeze else p2
        return total_epochs - p2, full, p2 - full

    def phase_plan(self, total_epochs: int):
        return self.plan(self.cfg.get("fussl_phase2_epochs"), total_epochs, self.freeze)

    def schedule_starts(self, total_epochs: int) -> List[int]:
        # phase 2 is a training of its own on the pseudo-labels: on the tail of one cosine over all
        # epochs it would run at lr ~ 0 and leave the chosen block as phase 1 left it
        return [0, self.phase_plan(total_epochs)[0]]

    def forward(self, views: List[torch.Tensor], index: torch.Tensor):
        if self.phase == "1":
            losses = [block(views[2 * b: 2 * b + 2], index)[0] for b, block in enumerate(self.blocks)]
            # summed so each block gets the gradient it would get when trained alone
            return torch.stack(losses).sum(), {f"loss_block{b}": float(l.detach()) for b, l in enumerate(losses)}
        block = self.blocks[self.chosen]
        target = self.labels[index]
        loss = torch.stack([soft_cross_entropy(block.embed(v), target) for v in views[:2]]).mean()
        return loss, {}

    def after_step(self, step: int, total_steps: int) -> None:
        if self.phase == "1":
            for block in self.blocks:
                block.after_step(step, total_steps)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.phase == "2b":
            for name, child in self.blocks[self.chosen].backbone.named_children():
                if name != self.last_stage:
                    child.eval()  # frozen layers keep their BN statistics too
        return self

    def prepare_epoch(self, epoch: int, total_epochs: int, ctx: Dict[str, Any]) -> bool:
        p1, full, _ = self.phase_plan(total_epochs)
        phase = "1" if epoch < p1 else ("2a" if epoch < p1 + full else "2b")
        if phase == self.phase:
            return False
        if phase != "1" and self.chosen is None:
            self._label(ctx)
        self.phase = phase
        self._set_trainable()
        return True

    def _set_trainable(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        if self.phase == "1":
            for p in self.parameters():
                p.requires_grad_(id(p) in self._trainable)
            return
        block = self.blocks[self.chosen]
        train_modules = [block.projector]
        if self.phase == "2a":
            train_modules.append(block.backbone)
        else:
            train_modules.append(getattr(block.backbone, self.last_stage))
        for mod in train_modules:
            for p in mod.parameters():
                p.requires_grad_(id(p) in self._trainable)

    @torch.no_grad()
    def _label(self, ctx: Dict[str, Any]) -> None:
        """Fuzzy pseudo-labels of the un-augmented training set and the block with the lowest error."""
        loader, n = ctx["plain_loader"], int(ctx["num_train"])
        device = ctx["device"]
        was_training = self.training
        self.eval()
        idx_parts, vote_parts = [], []
        for batch in loader:  # (images, index[, label]); labels are never read
            images, index = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            logits = [block.embed(images) for block in self.blocks]
            num_classes = logits[0].shape[1]
            votes = torch.stack([z.argmax(dim=1) for z in logits], dim=1)
            idx_parts.append(index.to(device))
            vote_parts.append(votes)
        index = D.gather(torch.cat(idx_parts))
        votes = D.gather(torch.cat(vote_parts))
        all_votes = torch.zeros(n, self.m, dtype=torch.long, device=device)
        all_votes[index] = votes
        labels, hard = fuzzy_labels(all_votes, num_classes, self.soft_only)
        errors = pseudo_label_error(all_votes, labels)
        self.chosen = int(errors.argmin())
        self.labels = labels
        self.info = {"fussl_chosen_block": self.chosen, "fussl_block_errors": [round(float(e), 4) for e in errors],
                     "fussl_hard_fraction": round(float(hard.float().mean()), 4),
                     "fussl_classes_used": int((labels.sum(0) > 0).sum())}
        self.train(was_training)

    def extra_state(self) -> Dict[str, Any]:
        return {"chosen": self.chosen, "info": self.info,
                "labels": None if self.labels is None else self.labels.detach().cpu()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.chosen = state.get("chosen")
        self.info = state.get("info", {})
        labels = state.get("labels")
        device = next(self.parameters()).device
        self.labels = None if labels is None else labels.to(device)
