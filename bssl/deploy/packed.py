"""Packed inference for bssl students: every binary convolution runs through bssl.kernels.

`pack(model)` returns an eval-mode copy of a student in which each `bssl.nn.BinaryConvBN` unit
(`bn(conv(sign(x + b)))`) is replaced by a `PackedBinaryConvBN` built from its `FoldedUnit`
(bssl.deploy.fold, the one folding):

  1. the RSign bias is added while the sign bits are packed, inside the same kernel call as
  2. the XNOR-popcount convolution on the packed bits with the packed sign(W);
  3. the fused float output transform ``y = scale * dot + shift`` (alpha and BatchNorm folded).

RPReLUs whose input bias `fold_student` absorbed into the units' shifts become PReLU + output
bias. What does not fold: the PReLU, its output bias and the residual add sit between one
unit's output and the next unit's RSign, so the next RSign bias cannot move into this
transform. Only where a unit feeds the next unit directly could the next RSign bias fold into
shift and the output be thresholded to packed bits (``PackedConv2d(out='bits')``); ReActNet and
Bi-Real have no such pair. The FP stem, pooling and head stay in torch.

Zero padding (`pad_value=0`): the kernels pad with +1, so `FoldedUnit.padding_correction` (a
fixed map per input size) is added to the output.
"""

from __future__ import annotations

import copy
from typing import Dict, Tuple

import torch
from torch import nn

from ..errors import UserError
from .fold import FoldedUnit, fold_student, fold_unit, strip_absorbed


def _kernels():
    from bssl import kernels

    if not kernels.available():
        raise UserError("bssl.deploy.pack needs the compiled kernel library; build it with "
                        "`pip install -e . --no-build-isolation` (see docs/kernels.md)")
    return kernels


class PackedBinaryConvBN(nn.Module):
    """A BinaryConvBN unit (eval mode) running on the bit-packed kernels; NCHW float in and out.

    Built from a unit (folded here with `fold_unit`) or, with `from_folded`, from a FoldedUnit
    (no float weights needed)."""

    def __init__(self, unit: nn.Module, name: str = "unit", threads: int = 1, extra_shift=None):
        super().__init__()
        self._setup(fold_unit(unit, name, extra_shift), threads)

    @classmethod
    def from_folded(cls, folded: FoldedUnit, threads: int = 1) -> "PackedBinaryConvBN":
        mod = cls.__new__(cls)
        nn.Module.__init__(mod)
        mod._setup(folded, threads)
        return mod

    def _setup(self, f: FoldedUnit, threads: int) -> None:
        K = _kernels()
        self.folded = f
        self.in_channels, self.out_channels = f.in_channels, f.out_channels
        self.kernel_size = (f.kernel_size, f.kernel_size)
        self.stride, self.padding, self.pad_value = f.stride, f.padding, f.pad_value
        self.threads = int(threads)
        self.kernel = K.PackedConv2d(f.weight_bits, f.in_channels, f.stride, f.padding, out="float",
                                     scale=f.scale, shift=f.shift)
        self.register_buffer("rsign_bias", torch.from_numpy(f.rsign_bias.copy()))
        self.register_buffer("scale", torch.from_numpy(f.scale.copy()))
        self._corr: Dict[Tuple[int, int], torch.Tensor] = {}

    def _correction(self, h: int, w: int) -> torch.Tensor:
        """FoldedUnit.padding_correction as NHWC (1, Ho, Wo, O), cached per input size."""
        key = (h, w)
        if key not in self._corr:
            corr = torch.from_numpy(self.folded.padding_correction(h, w))
            self._corr[key] = corr.permute(1, 2, 0).unsqueeze(0).contiguous()
        return self._corr[key]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected NCHW input with {self.in_channels} channels, got shape {tuple(x.shape)}")
        x = x.detach()
        if x.dtype != torch.float32:
            x = x.float()
        nhwc = x.cpu().permute(0, 2, 3, 1)  # free when x is channels_last, as unit outputs are
        if not nhwc.is_contiguous():
            nhwc = nhwc.contiguous()
        # packing of sign(x + b) and the conv in one kernel call
        y = self.kernel.apply_float(nhwc, self.rsign_bias, threads=self.threads)  # NHWC float32
        if self.folded.needs_correction:
            y += self._correction(int(x.shape[2]), int(x.shape[3]))
        return y.permute(0, 3, 1, 2).to(x.device)  # NCHW view, channels_last memory

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, pad_value={self.pad_value}, threads={self.threads}")


def _check_threads(threads) -> None:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserError(f"threads must be an integer >= 1, got {threads!r}")


def pack_folded(model: nn.Module, folded, threads: int = 1) -> nn.Module:
    """In place: swap each BinaryConvBN of `model` named in `folded` (a FoldedStudent) for its
    PackedBinaryConvBN and each absorbed RPReLU for PReLU + bias_out; returns the model.

    The units may live on the meta device: only their names are used."""
    _check_threads(threads)
    for name, f in folded.units.items():
        model.set_submodule(name, PackedBinaryConvBN.from_folded(f, threads))
    strip_absorbed(model, folded)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def pack(model: nn.Module, threads: int = 1) -> nn.Module:
    """An eval-mode copy of `model` whose BinaryConvBN units run on the packed kernels.

    The FP parts (stem, RPReLU, pooling, head) stay in torch. The copy lives on the CPU; the
    original model is not modified. `threads` is the kernels' thread count per conv.
    """
    _check_threads(threads)
    packed = copy.deepcopy(model).cpu().eval()
    return pack_folded(packed, fold_student(packed), threads)


def set_threads(packed: nn.Module, threads: int) -> None:
    """Change the kernels' thread count of every packed unit."""
    _check_threads(threads)
    for m in packed.modules():
        if isinstance(m, PackedBinaryConvBN):
            m.threads = threads


__all__ = ["pack", "pack_folded", "PackedBinaryConvBN", "set_threads"]
