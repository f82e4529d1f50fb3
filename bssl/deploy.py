"""Packed inference for bssl students: every binary convolution runs through bssl.kernels.

`pack(model)` returns an eval-mode copy of a student in which each `bssl.nn.BinaryConvBN` unit
(`bn(conv(sign(x + b)))`) is replaced by a `PackedBinaryConvBN`:

  1. the RSign bias is added while the sign bits are packed, inside the same kernel call as
  2. the XNOR-popcount convolution on the packed bits with the packed sign(W);
  3. alpha and BatchNorm are folded into the fused float output transform of the kernel,
     ``y = scale * dot + shift`` with ``scale = gamma * alpha / sqrt(var + eps)`` and
     ``shift = beta - gamma * mean / sqrt(var + eps)``.

In ReActNet blocks the first bias of the RPReLU after a unit folds as well: RPReLU(y + s)
starts with y + s + b_in, and the residual s commutes with b_in, so b_in joins the unit's
shift and the RPReLU left in torch is PReLU + output bias (channel halves of the 2c RPReLU go
to the two duplicated 1x1 units). What does not fold: the PReLU, its output bias and the
residual add sit between one unit's output and the next unit's RSign, so the next RSign bias
cannot move into this transform. Only where a unit feeds the next unit directly could the next
RSign bias fold into shift and the output be thresholded to packed bits
(``PackedConv2d(out='bits')``); ReActNet and Bi-Real have no such pair. The FP stem, pooling
and head stay in torch.

Zero padding (`pad_value=0`) is supported with a correction: the kernel pads with +1, so the
padded taps add ``sum sign(W)`` over them; a per-position term ``(pad_value - 1) * that sum``
is computed once per input size (a float conv of a padded all-zero image) and added.
"""

from __future__ import annotations

import copy
from typing import Dict, Tuple

import torch
from torch import nn

from .errors import UserError


def _kernels():
    from bssl import kernels

    if not kernels.available():
        raise UserError("bssl.deploy.pack needs the compiled kernel library; build it with "
                        "`pip install -e . --no-build-isolation` (see docs/kernels.md)")
    return kernels


def _pair_equal(v, what: str, where: str) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise UserError(f"{where}: the packed kernels need a square {what}, got {tuple(v)}; keep this layer in torch")
    return int(a)


class PackedBinaryConvBN(nn.Module):
    """A BinaryConvBN unit (eval mode) running on the bit-packed kernels; NCHW float in and out."""

    def __init__(self, unit: nn.Module, name: str = "unit", threads: int = 1, extra_shift=None):
        super().__init__()
        K = _kernels()
        conv, bn, sign = unit.conv, unit.bn, unit.sign
        where = f"{name} ({type(unit).__name__})"
        if not getattr(conv, "binary_weights", True):
            raise UserError(f"{where} has full-precision weights (stage 1); pack a stage-2 student "
                            "(bssl.nn.set_stage(model, 2)) or keep it in torch")
        if conv.groups != 1 or _pair_equal(conv.dilation, "dilation", where) != 1:
            raise UserError(f"{where}: grouped or dilated binary convs are not supported by the packed kernels")
        stride = _pair_equal(conv.stride, "stride", where)
        padding = _pair_equal(conv.padding, "padding", where)
        w = conv.weight.detach().float().cpu()
        alpha = w.abs().mean(dim=(1, 2, 3)).double()
        if bn.running_mean is None or bn.running_var is None:
            raise UserError(f"{where}: its BatchNorm tracks no running statistics, so it cannot be folded")
        inv = 1.0 / torch.sqrt(bn.running_var.detach().double().cpu() + bn.eps)
        gamma = bn.weight.detach().double().cpu() if bn.weight is not None else torch.ones_like(inv)
        beta = bn.bias.detach().double().cpu() if bn.bias is not None else torch.zeros_like(inv)
        scale = gamma * alpha * inv
        shift = beta - gamma * bn.running_mean.detach().double().cpu() * inv
        if extra_shift is not None:  # a bias that follows the unit, e.g. the first RPReLU bias
            shift = shift + torch.as_tensor(extra_shift).detach().double().cpu().reshape(-1)
        self.in_channels, self.out_channels = int(w.shape[1]), int(w.shape[0])
        self.kernel_size = (int(w.shape[2]), int(w.shape[3]))
        self.stride, self.padding = stride, padding
        self.pad_value = float(getattr(conv, "pad_value", 1.0))
        self.threads = int(threads)
        self.kernel = K.PackedConv2d.from_float(w, stride, padding, out="float", scale=scale, shift=shift)
        self.register_buffer("rsign_bias", sign.bias.detach().float().cpu().contiguous().clone())
        self.register_buffer("scale", scale.float())
        # sign(W) for the zero-padding correction only
        self._wsign = torch.where(w < 0, -1.0, 1.0) if self.pad_value != 1.0 else None
        self._corr: Dict[Tuple[int, int], torch.Tensor] = {}

    def _correction(self, h: int, w: int) -> torch.Tensor:
        """(pad_value - 1) * scale * (sum of sign(W) over the padded taps), NHWC (1, Ho, Wo, O)."""
        key = (h, w)
        if key not in self._corr:
            p = self.padding
            ones_frame = torch.nn.functional.pad(torch.zeros(1, self.in_channels, h, w), (p, p, p, p), value=1.0)
            s = torch.nn.functional.conv2d(ones_frame, self._wsign, stride=self.stride)
            self._corr[key] = ((self.pad_value - 1.0) * self.scale.view(1, -1, 1, 1) * s).permute(0, 2, 3, 1).contiguous()
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
        if self.pad_value != 1.0 and self.padding > 0:
            y += self._correction(int(x.shape[2]), int(x.shape[3]))
        return y.permute(0, 3, 1, 2).to(x.device)  # NCHW view, channels_last memory

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, pad_value={self.pad_value}, threads={self.threads}")


class _PReLUOut(nn.Module):
    """The rest of an RPReLU whose input bias was folded into the preceding units."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.prelu = act.prelu
        self.bias_out = act.bias_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x) + self.bias_out.view(1, -1, 1, 1)


def _rprelu_folds(model: nn.Module):
    """{id(unit): bias slice} and the RPReLU modules whose input bias those slices cover."""
    from .models.reactnet import ReActBlock

    shifts: Dict[int, torch.Tensor] = {}
    acts = []
    for blk in model.modules():
        if not isinstance(blk, ReActBlock):
            continue
        shifts[id(blk.unit3x3)] = blk.act1.bias_in.detach()
        acts.append((blk, "act1"))
        if blk.downsample == "none":
            shifts[id(blk.unit1x1)] = blk.act2.bias_in.detach()
            acts.append((blk, "act2"))
        elif blk.downsample == "binary":
            c = blk.in_channels
            shifts[id(blk.unit1x1_a)] = blk.act2.bias_in.detach()[:c]
            shifts[id(blk.unit1x1_b)] = blk.act2.bias_in.detach()[c:]
            acts.append((blk, "act2"))
    return shifts, acts


def pack(model: nn.Module, threads: int = 1) -> nn.Module:
    """An eval-mode copy of `model` whose BinaryConvBN units run on the packed kernels.

    The FP parts (stem, RPReLU, pooling, head) stay in torch. The copy lives on the CPU; the
    original model is not modified. `threads` is the kernels' thread count per conv.
    """
    from .nn import BinaryConvBN

    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads must be an integer >= 1, got {threads!r}")
    if not any(isinstance(m, BinaryConvBN) for m in model.modules()):
        raise UserError(f"{type(model).__name__} has no bssl.nn.BinaryConvBN unit: nothing to pack "
                        "(build the student with bssl.models.build_model)")
    packed = copy.deepcopy(model).cpu().eval()
    shifts, acts = _rprelu_folds(packed)
    for name, mod in list(packed.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, BinaryConvBN):
                full = f"{name}.{child_name}" if name else child_name
                setattr(mod, child_name, PackedBinaryConvBN(child, full, threads, shifts.get(id(child))))
    for blk, attr in acts:
        setattr(blk, attr, _PReLUOut(getattr(blk, attr)))
    for p in packed.parameters():
        p.requires_grad_(False)
    return packed


def set_threads(packed: nn.Module, threads: int) -> None:
    """Change the kernels' thread count of every packed unit."""
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads must be an integer >= 1, got {threads!r}")
    for m in packed.modules():
        if isinstance(m, PackedBinaryConvBN):
            m.threads = threads


__all__ = ["pack", "PackedBinaryConvBN", "set_threads"]
