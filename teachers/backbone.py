"""FP backbones of the teachers: the shared `bssl.models.build_backbone` (torchvision ResNets with
fc removed, `.feature_dim`, optional small-image stem), plus the stem choice for a given image size."""

from __future__ import annotations

from bssl.config import as_bool
from bssl.errors import UserError
from bssl.models import build_backbone

ARCHS = {"resnet18": 512, "resnet50": 2048}

__all__ = ["ARCHS", "build_backbone", "resolve_small_stem"]


def resolve_small_stem(value, image_size: int) -> bool:
    """'auto' picks the small stem (3x3 s1, no maxpool) for images of 64 px or less."""
    if value in (None, "auto"):
        return int(image_size) <= 64
    flag = as_bool(value)
    if flag is not None:
        return flag
    raise UserError(f"teacher.small_stem must be true, false or \"auto\", not {value!r}")
