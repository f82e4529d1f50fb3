"""ReActNet-A (official liuzechun/ReActNet topology) and the -B / -C variants.

ReActNet-A at 224x224, as `reactnet.py` of the official code:
  stem   FP conv3x3 3->32 stride 2 + BN (no activation, as `firstconv3x3`)
  blocks 32->64 s1, 64->128 s2, 128->128, 128->256 s2, 256->256, 256->512 s2, 5 x 512->512,
         512->1024 s2, 1024->1024 (13 blocks)
  head   global avg pool + FP Linear
Block: out1 = RPReLU1(unit3x3(x) + (AvgPool2d(2)(x) if stride 2 else x));
       out2 = RPReLU2(unit1x1(out1) + out1), and where channels double, two 1x1 units c->c
       whose outputs are each added to out1 and concatenated (the "duplicated" downsampling).
Every binary conv is a BinaryConvBN unit (RSign -> BinaryConv2d -> BN).

Each of the two duplicated 1x1 units has its own RSign (as in the paper's figure; the official
code shares one LearnableBias before them, which the author calls equivalent in the repository's
issue tracker): c extra parameters per channel-doubling block, 992 in all at width 1.

Variants. The paper (Sec. 5.1) describes B and C as replacing the 1-bit 1x1 convs of the
downsampling (channel-doubling) blocks with real-valued 1x1 convs; B uses group convs with 4
groups, C full convs. The released code has no B/C, so this is our reading:
  reactnet-b  the duplicated binary 1x1 units of the five channel-doubling blocks become one
              real-valued 1x1 conv c->2c with 4 groups + BN on the real-valued out1, added to
              cat(out1, out1);
  reactnet-c  the same with a full (1 group) real-valued 1x1 conv.
Both remove 1.28e8 BOPs (4.82e9 -> 4.69e9) and add 0.32e8 (B) or 1.28e8 (C) FLOPs to the 0.12e8
of stem + FC, i.e. the paper's 4.69e9 BOPs and 0.44e8 / 1.40e8 FLOPs. (The paper's OPs for B,
1.63e8, is not its own BOPs/64 + FLOPs = 1.17e8; C's 2.14e8 is.)

Small stem (32/64 px inputs): FP conv3x3 stride 1 instead of stride 2; the block strides are
unchanged, so the total stride is 16 (32 px -> 2x2 final map, 64 px -> 4x4).
Width multiplier: the stem/first width 32 is scaled and rounded to a multiple of 8 (min 8);
the later stages keep the exact 2x/4x/.../32x ratios (see common.scaled_base).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..errors import UserError
from ..nn import BinaryConvBN, RPReLU
from .common import check_input_size, scaled_base

# (out multiple of the base width, stride) for the 13 blocks; the base width is 32.
REACTNET_A_BLOCKS: List[Tuple[int, int]] = [
    (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2),
    (16, 1), (16, 1), (16, 1), (16, 1), (16, 1), (32, 2), (32, 1),
]
DOWNSAMPLE_KINDS = ("binary", "fp-group4", "fp")


class ReActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, pad_value: float = 1.0,
                 binary_weights: bool = True, downsample: str = "binary"):
        super().__init__()
        if out_channels not in (in_channels, 2 * in_channels):
            raise UserError(
                f"a ReActNet block maps c -> c or c -> 2c channels; got {in_channels} -> {out_channels}"
            )
        if stride not in (1, 2):
            raise UserError(f"a ReActNet block has stride 1 or 2, got {stride}")
        if downsample not in DOWNSAMPLE_KINDS:
            raise UserError(f"downsample must be one of {', '.join(DOWNSAMPLE_KINDS)}, got {downsample!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.downsample = downsample if out_channels != in_channels else "none"
        kw = dict(pad_value=pad_value, binary_weights=binary_weights)
        self.unit3x3 = BinaryConvBN(in_channels, in_channels, 3, stride=stride, padding=1, **kw)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.act1 = RPReLU(in_channels)
        if out_channels == in_channels:
            self.unit1x1 = BinaryConvBN(in_channels, in_channels, 1, padding=0, **kw)
        elif downsample == "binary":
            self.unit1x1_a = BinaryConvBN(in_channels, in_channels, 1, padding=0, **kw)
            self.unit1x1_b = BinaryConvBN(in_channels, in_channels, 1, padding=0, **kw)
        else:
            groups = 4 if downsample == "fp-group4" else 1
            if in_channels % groups:
                raise UserError(f"the 4-group FP 1x1 conv of reactnet-b needs channels divisible by 4, got {in_channels}")
            self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)
            self.bn1x1 = nn.BatchNorm2d(out_channels)
        self.act2 = RPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.act1(self.unit3x3(x) + self.pool(x))
        if self.downsample == "none":
            out2 = self.unit1x1(out1) + out1
        elif self.downsample == "binary":
            out2 = torch.cat([self.unit1x1_a(out1) + out1, self.unit1x1_b(out1) + out1], dim=1)
        else:
            out2 = self.bn1x1(self.conv1x1(out1)) + torch.cat([out1, out1], dim=1)
        return self.act2(out2)


class ReActNet(nn.Module):
    """A ReActNet student: `.stem`, `.blocks`, `.pool`, `.classifier`; features() is k, classifier is l."""

    def __init__(self, *, num_classes: int = 1000, width: float = 1.0, stem: str = "imagenet",
                 pad_value: float = 1.0, binary_weights: bool = True, downsample: str = "binary"):
        super().__init__()
        base = scaled_base(32, width)
        stem_stride = 2 if stem == "imagenet" else 1
        self.stem = nn.Sequential(nn.Conv2d(3, base, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(base))
        blocks, c = [], base
        for mult, stride in REACTNET_A_BLOCKS:
            blocks.append(ReActBlock(c, base * mult, stride, pad_value, binary_weights, downsample))
            c = base * mult
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c
        self.classifier = nn.Linear(c, num_classes)
        self.total_stride = stem_stride * 16

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_reactnet(name: str, downsample: str):
    def factory(*, num_classes: int, input_size: int, width: float, stem: str, pad_value: float,
                binary_weights: bool) -> ReActNet:
        check_input_size(name, input_size, stem, 32 if stem == "imagenet" else 16)
        return ReActNet(num_classes=num_classes, width=width, stem=stem, pad_value=pad_value,
                        binary_weights=binary_weights, downsample=downsample)

    factory.__doc__ = f"{name}: ReActNet with {downsample!r} channel-doubling 1x1 convs."
    return factory
