"""Bi-Real-Net-18 (Liu et al. 2018) built from BinaryConvBN units.

ResNet-18 layout: FP stem conv7x7 3->64 s2 + BN + maxpool3x3 s2 (official Bi-Real code has no
ReLU there), four stages of 2 basic blocks (64, 128, 256, 512), each basic block two binary 3x3
units, each unit with its own real-valued shortcut: out = unit(x) + shortcut(x). The shortcut of
the first unit of stages 2-4 (stride 2, channels doubled) is AvgPool2d(2) + FP conv1x1 + BN.
Head: global avg pool + FP Linear. The sign in each unit is an RSign whose bias starts at 0
(plain sign at init, learnable like every BinaryConvBN).

`reactnet-18` is the Bi-Real-based ReActNet of the official repository (resnet/ folder,
"ReActNet (Bi-Real based)", 65.9% top-1): the same network with an RPReLU after every residual
addition, out = RPReLU(unit(x) + shortcut(x)). Same BOPs/FLOPs as Bi-Real-18.

Small stem: FP conv3x3 s1 + BN and no maxpool (total stride 8: 32 px -> 4x4 final map).
Width multiplier: 64 scaled, rounded to a multiple of 8 (min 8), stages 1x/2x/4x/8x of it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BinaryConvBN, RPReLU
from .common import check_input_size, scaled_base


class BiRealUnit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, pad_value: float, binary_weights: bool,
                 rprelu: bool = False):
        super().__init__()
        self.unit = BinaryConvBN(in_channels, out_channels, 3, stride=stride, padding=1,
                                 pad_value=pad_value, binary_weights=binary_weights)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, stride) if stride != 1 else nn.Identity(),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.act = RPReLU(out_channels) if rprelu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.unit(x) + self.shortcut(x))


class BiRealNet18(nn.Module):
    def __init__(self, *, num_classes: int = 1000, width: float = 1.0, stem: str = "imagenet",
                 pad_value: float = 1.0, binary_weights: bool = True, rprelu: bool = False):
        super().__init__()
        base = scaled_base(64, width)
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base),
                                      nn.MaxPool2d(3, 2, 1))
            self.total_stride = 32
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base))
            self.total_stride = 8
        units, c = [], base
        for stage, mult in enumerate((1, 2, 4, 8)):
            out = base * mult
            for i in range(4):  # 2 basic blocks x 2 units
                stride = 2 if stage > 0 and i == 0 else 1
                units.append(BiRealUnit(c, out, stride, pad_value, binary_weights, rprelu))
                c = out
        self.blocks = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c
        self.classifier = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_birealnet18(name: str, rprelu: bool):
    def factory(*, num_classes: int, input_size: int, width: float, stem: str, pad_value: float,
                binary_weights: bool) -> BiRealNet18:
        check_input_size(name, input_size, stem, 32 if stem == "imagenet" else 8)
        return BiRealNet18(num_classes=num_classes, width=width, stem=stem, pad_value=pad_value,
                           binary_weights=binary_weights, rprelu=rprelu)

    factory.__doc__ = f"{name}: ResNet-18 layout, binary 3x3 units{' with RPReLU' if rprelu else ''}."
    return factory
