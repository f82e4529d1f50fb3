"""FP backbones for teachers: torchvision ResNets with the FC removed and `.feature_dim` set.

small_stem=True replaces the 7x7 s2 conv + maxpool by a 3x3 s1 conv and no maxpool (the usual
CIFAR-style stem for 32/64 px images).
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from ..registry import Registry

BACKBONES: Registry = Registry("backbone")


def _resnet(factory, feature_dim: int, small_stem: bool) -> nn.Module:
    net = factory(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.feature_dim = feature_dim
    return net


@BACKBONES.register("resnet18")
def resnet18(small_stem: bool = False) -> nn.Module:
    return _resnet(tvm.resnet18, 512, small_stem)


@BACKBONES.register("resnet50")
def resnet50(small_stem: bool = False) -> nn.Module:
    return _resnet(tvm.resnet50, 2048, small_stem)


def build_backbone(name: str, small_stem: bool = False) -> nn.Module:
    """FP backbone `name` (resnet18 | resnet50); backbone(x) -> (N, feature_dim)."""
    return BACKBONES.get(name)(small_stem=bool(small_stem))
