"""`profile(target, ...)`: profile a student name, an FP backbone name or a checkpoint path.

The one entry point the `bssl profile` command and notebooks share. Named models are built on
the meta device: counting needs shapes only, so nothing is allocated or initialised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import UserError


def _looks_like_path(s: str) -> bool:
    return s.endswith((".pt", ".pth", ".tar")) or os.sep in s or "/" in s or Path(s).is_file()


def resolve_target(target: str | os.PathLike, *, input_size: Optional[int] = None, width: float = 1.0,
                   stem: str = "auto", num_classes: int = 1000) -> Tuple[nn.Module, int]:
    """(model, input size) for a registered student, an FP backbone or a checkpoint file."""
    from ..models import BACKBONES, build_backbone, build_model, load_official_reactnet, load_student
    from ..models.common import resolve_stem

    target = str(target)
    if _looks_like_path(target):
        try:
            model = load_student(target)
        except UserError as exc:
            if "not a bssl checkpoint" not in str(exc):
                raise
            model = load_official_reactnet(target)  # a released liuzechun/ReActNet checkpoint
        size = input_size or model.spec["input_size"]
        if size != model.spec["input_size"]:
            # profiled at another size than it was built for: check that size against its stem
            with torch.device("meta"):
                build_model(model.spec["name"], num_classes=model.spec["num_classes"], input_size=size,
                            width=model.spec["width"], stem=model.spec["stem"])
        return model, size
    size = input_size or 224
    if target in BACKBONES:
        # FP teacher backbones for side-by-side costs (they end at the pooled features, no FC)
        stem_kind = resolve_stem(stem, size)
        with torch.device("meta"):
            model = build_backbone(target, small_stem=stem_kind == "small")
        model.spec = {"name": target, "input_size": size, "stem": stem_kind}
        return model, size
    with torch.device("meta"):
        model = build_model(target, num_classes=num_classes, input_size=size, width=width, stem=stem)
    return model, size


def profile(target: str | os.PathLike | nn.Module, *, input_size: Optional[int] = None, width: float = 1.0,
            stem: str = "auto", num_classes: int = 1000, word_bits: int = 64) -> Dict[str, Any]:
    """Profile a model object, a registered name (students, resnet18/50) or a checkpoint path."""
    from .counter import profile_model

    if isinstance(target, nn.Module):
        spec = getattr(target, "spec", None) or {}
        size = input_size or spec.get("input_size")
        if not size:
            raise UserError("profile() of a model without .spec needs input_size")
        return profile_model(target, int(size), word_bits=word_bits)
    model, size = resolve_target(target, input_size=input_size, width=width, stem=stem, num_classes=num_classes)
    return profile_model(model, size, word_bits=word_bits)
