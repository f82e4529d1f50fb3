"""FP backbones of the teachers: torchvision ResNets with fc removed and an optional small-image stem.

`bssl.models.build_backbone` is the shared builder (students engineer); this module defers to it
when it exists and otherwise builds the same thing, so teachers and students agree on key names.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision

from bssl.errors import UserError

ARCHS = {"resnet18": 512, "resnet50": 2048}


def _local_build(name: str, small_stem: bool) -> nn.Module:
    if name not in ARCHS:
        raise UserError(f"unknown teacher backbone {name!r}; known: {', '.join(sorted(ARCHS))}")
    net = getattr(torchvision.models, name)(weights=None)
    if small_stem:
        # CIFAR-style stem: 32-64 px images keep their resolution through the first stage.
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.feature_dim = ARCHS[name]
    return net


def build_backbone(name: str, small_stem: bool = False) -> nn.Module:
    """ResNet trunk returning (N, feature_dim) pooled features; `.feature_dim` tells the width."""
    try:
        from bssl.models import build_backbone as shared
    except ImportError:
        shared = None
    net = shared(name, small_stem=small_stem) if shared is not None else _local_build(name, small_stem)
    if not hasattr(net, "feature_dim"):
        net.feature_dim = ARCHS[name]
    return net


def resolve_small_stem(value, image_size: int) -> bool:
    """'auto' picks the small stem for images of 64 px or less."""
    if value in (None, "auto"):
        return int(image_size) <= 64
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise UserError(f"teacher.small_stem must be true, false or \"auto\", not {value!r}")
