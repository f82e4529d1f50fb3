"""The teacher-method interface and its registry.

A method is an nn.Module holding the backbone and its heads. The trainer calls
`forward(views, index) -> (loss, logs)` (the only call DistributedDataParallel wraps),
`after_step(step, total_steps)` after each optimiser step (momentum encoders),
and `prepare_epoch(epoch, ctx)` before each epoch (phase changes; returns True when the set of
trainable parameters changed). Each class declares its options with the paper's defaults in
OPTIONS (bssl.config.Key: type, default, range); the preset's [teacher] keys and an optional
[teacher.<method>] table override them, and bssl.config validates them before any work.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn

from bssl.config import TEACHER, Key, defaults
from bssl.data.augment import VIEW_KEYS, MultiView, method_views, view_overrides
from bssl.errors import UserError
from bssl.registry import Registry

METHODS: Registry[type] = Registry("teacher method")

# The view keys every method reads (declared with the [teacher] section in bssl.config).
VIEW_OPTIONS = ("num_views", "multicrop_local", "local_size") + tuple(VIEW_KEYS)
COMMON_DEFAULTS: Dict[str, Any] = {k: TEACHER[k].default for k in VIEW_OPTIONS}


def method_table(section: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The [<section>.<name>] table of a config section; {} when the preset has none."""
    table = section.get(name)
    return dict(table) if isinstance(table, dict) else {}


def with_method_table(section: Dict[str, Any], name: str) -> Dict[str, Any]:
    """A section's own keys with its [<section>.<name>] table over them; other methods' tables dropped."""
    flat = {k: v for k, v in section.items() if not isinstance(v, dict)}
    flat.update(method_table(section, name))
    return flat


def method_config(name: str, teacher_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The method's view keys and options: its defaults < [teacher] keys < [teacher.<name>] table."""
    cls = METHODS.get(name)
    wanted = set(VIEW_OPTIONS) | set(cls.option_keys())
    given = {k: v for k, v in with_method_table(teacher_cfg, name).items() if k in wanted}
    return {**COMMON_DEFAULTS, **cls.defaults(), **given}


class TeacherMethod(nn.Module):
    name = ""
    pipeline = "mocov2"
    #: the method's own config keys with the paper's defaults (view keys may be re-declared with another default)
    OPTIONS: Dict[str, Key] = {}

    @classmethod
    def option_keys(cls) -> Dict[str, Key]:
        """The keys a [teacher.<name>] table may set besides the trainer's."""
        return dict(cls.OPTIONS)

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return defaults(cls.OPTIONS)

    @classmethod
    def check_config(cls, settings: Dict[str, Any]) -> None:
        """Cross-key checks on the effective settings (trainer keys + options), before any work."""

    def __init__(self, backbone: nn.Module, cfg: Dict[str, Any]):
        super().__init__()
        self.cfg = dict(cfg)
        self.backbone = backbone
        self.feature_dim = int(backbone.feature_dim)
        self.num_views = int(self.cfg["num_views"])
        self.num_local = int(self.cfg["multicrop_local"])
        if self.num_views < 2:
            raise UserError(f"teacher.num_views = {self.num_views}: {self.name} needs at least 2 views per image")

    # what the checkpoint calls the backbone and the heads
    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def heads(self) -> Dict[str, nn.Module]:
        return {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output of the online branch (FUSSL reads its argmax as a class)."""
        raise UserError(f"method {self.name} has no projector to label with")

    def views(self, image_size: int) -> MultiView:
        return method_views(self.pipeline, image_size, self.num_views, self.num_local, int(self.cfg["local_size"]),
                            **view_overrides(self.cfg))

    def forward(self, views: List[torch.Tensor], index: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise UserError(f"method {self.name} does not define a training step")

    def param_groups(self) -> List[Dict[str, Any]]:
        """Optimiser groups; a group with fix_lr=True keeps its lr (SimSiam's predictor)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def after_step(self, step: int, total_steps: int) -> None:
        pass

    def prepare_epoch(self, epoch: int, total_epochs: int, ctx: Dict[str, Any]) -> bool:
        return False

    def schedule_starts(self, total_epochs: int) -> List[int]:
        """Epochs where the lr schedule (warm-up, then cosine to 0) starts over; one schedule by default."""
        return [0]

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        pass


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online over parameters; BN statistics of the target come
    from its own forward passes, as in the MoCo and BYOL code."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
