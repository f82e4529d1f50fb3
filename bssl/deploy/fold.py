"""The one frozen, packed form of a binary student: every BinaryConvBN unit folded once.

A unit `bn(conv(sign(x + b)))` in stage 2 computes, per output channel o,
    y_o = gamma_o * (alpha_o * dot_o - mean_o) / sqrt(var_o + eps) + beta_o = scale_o * dot_o + shift_o
with dot = sign(W_o) . sign(x + b) (an integer, K - 2 * popcount of the XOR on packed bits),
alpha_o = mean|W_o|, scale_o = gamma_o * alpha_o / sqrt(var_o + eps) and
shift_o = beta_o - gamma_o * mean_o / sqrt(var_o + eps). `fold_unit` computes this in float64
and rounds to float32 once; the sign bits come from the one weight packer
(`bssl.kernels.ops.pack_weight_signs`). Every consumer (bssl.deploy.pack, the bench artifact,
the ONNX/TVM/LCE exports, the native runtime) reads these numbers instead of folding again.

Padding: the kernels pad the signed input with +1 (bit 0). A unit trained with another pad
value (`pad_value=0`, the official ReActNet checkpoints) differs from that only on padded taps,
by `scale * (pad_value - 1) * sum of sign(W) over the padded taps`, a fixed map per input size:
`FoldedUnit.padding_correction(h, w)` is that map and the only place this policy lives.

`fold_student` applies the RPReLU input-bias policy: an RPReLU right after a unit's output (plus
a residual) starts with `+ bias_in`, which commutes with the residual add and so joins the
unit's shift. What is left of such an RPReLU is `PReLU(x) + bias_out` (`PReLUOut`). The next
unit's RSign bias cannot move into this shift: the PReLU and the residual sit in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..kernels.ops import pack_weight_signs, unpack_bits, words


def _frozen(a, dtype, shape: Tuple[int, ...], what: str) -> np.ndarray:
    """A read-only C-contiguous copy of `a` with the given dtype and shape."""
    arr = np.array(a, dtype=dtype, copy=True, order="C")
    if arr.shape != shape:
        raise ValueError(f"FoldedUnit.{what}: expected shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class FoldedUnit:
    """One BinaryConvBN unit, folded: y = scale * dot + shift on sign(x + rsign_bias) (see module doc)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    pad_value: float
    rsign_bias: np.ndarray   # float32 (in_channels,)
    weight_bits: np.ndarray  # uint64 (out_channels, k, k, words(in_channels)), bit 1 = negative
    scale: np.ndarray        # float32 (out_channels,)
    shift: np.ndarray        # float32 (out_channels,)

    def __post_init__(self):
        for f in ("in_channels", "out_channels", "kernel_size", "stride"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"FoldedUnit.{f} must be >= 1, got {getattr(self, f)}")
        if int(self.padding) < 0:
            raise ValueError(f"FoldedUnit.padding must be >= 0, got {self.padding}")
        for f in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
            object.__setattr__(self, f, int(getattr(self, f)))
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "pad_value", float(self.pad_value))
        c, o, k = self.in_channels, self.out_channels, self.kernel_size
        object.__setattr__(self, "rsign_bias", _frozen(self.rsign_bias, np.float32, (c,), "rsign_bias"))
        bits = np.asarray(self.weight_bits)
        if bits.dtype == np.int64:  # torch stores packed words as int64; same bits
            bits = bits.view(np.uint64)
        if bits.dtype != np.uint64:
            raise ValueError(f"FoldedUnit.weight_bits: expected uint64 words, got {bits.dtype}")
        bits = _frozen(bits, np.uint64, (o, k, k, words(c)), "weight_bits")
        if c % 64 and np.any(bits[..., -1] >> np.uint64(c % 64)):
            raise ValueError("FoldedUnit.weight_bits: channel tail bits must be 0 (+1)")
        object.__setattr__(self, "weight_bits", bits)
        object.__setattr__(self, "scale", _frozen(self.scale, np.float32, (o,), "scale"))
        object.__setattr__(self, "shift", _frozen(self.shift, np.float32, (o,), "shift"))

    def __reduce__(self):
        # through the constructor, so copies and unpickled units are checked and read-only again
        return (type(self), tuple(getattr(self, f) for f in self.__dataclass_fields__))

    @property
    def K(self) -> int:
        """Entries of one +-1 dot product: kernel_size^2 * in_channels."""
        return self.kernel_size * self.kernel_size * self.in_channels

    @property
    def needs_correction(self) -> bool:
        """True when the one-padded kernel result needs padding_correction added."""
        return self.pad_value != 1.0 and self.padding > 0

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def weight_bytes(self) -> np.ndarray:
        """uint8 (O, k, k, 8 * words): the little-endian bytes of weight_bits (export/ops layout)."""
        return np.ascontiguousarray(self.weight_bits.astype("<u8")).view(np.uint8)

    def weight_signs(self) -> np.ndarray:
        """float32 (O, C, k, k) of +-1: sign(W) unpacked from weight_bits."""
        return np.ascontiguousarray(unpack_bits(self.weight_bits, self.in_channels).transpose(0, 3, 1, 2))

    def tap_sums(self) -> np.ndarray:
        """int64 (O, k, k): sum over input channels of sign(W) at each tap."""
        pop = np.bitwise_count(self.weight_bits).sum(-1, dtype=np.int64)
        return self.in_channels - 2 * pop

    def padding_correction(self, h: int, w: int) -> np.ndarray:
        """float32 (O, Ho, Wo) to add to the one-padded result for an h x w input (zeros if none needed).

        Padded taps hold pad_value in the trained unit and +1 in the kernels, so the dot differs by
        (pad_value - 1) * (sum of sign(W) over the taps that fall into the padding)."""
        ho, wo = self.output_size(h, w)
        if not self.needs_correction:
            return np.zeros((self.out_channels, ho, wo), dtype=np.float32)
        k, s, p = self.kernel_size, self.stride, self.padding
        taps = np.arange(k)
        inside_y = ((np.arange(ho)[:, None] * s - p + taps) >= 0) & ((np.arange(ho)[:, None] * s - p + taps) < h)
        inside_x = ((np.arange(wo)[:, None] * s - p + taps) >= 0) & ((np.arange(wo)[:, None] * s - p + taps) < w)
        t = self.tap_sums().astype(np.float64)
        inner = np.einsum("oab,ya,xb->oyx", t, inside_y.astype(np.float64), inside_x.astype(np.float64))
        padded = t.sum(axis=(1, 2))[:, None, None] - inner
        corr = self.scale.astype(np.float64)[:, None, None] * (self.pad_value - 1.0) * padded
        return corr.astype(np.float32)

    def __repr__(self) -> str:
        return (f"FoldedUnit({self.name!r}, {self.in_channels}->{self.out_channels}, k={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, pad_value={self.pad_value})")


def _square(v, what: str, where: str) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise UserError(f"{where}: the packed form needs a square {what}, got {tuple(v)}; keep this layer in torch")
    return int(a)


def bn_affine(bn: nn.Module, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = g * x + h per channel, float64 (g, h)."""
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        raise UserError(f"{where}: its BatchNorm has no running statistics (track_running_stats=False), "
                        "so it cannot be folded")
    g = 1.0 / np.sqrt(bn.running_var.detach().cpu().double().numpy() + float(bn.eps))
    if bn.weight is not None:
        g = g * bn.weight.detach().cpu().double().numpy()
    h = -bn.running_mean.detach().cpu().double().numpy() * g
    if bn.bias is not None:
        h = h + bn.bias.detach().cpu().double().numpy()
    return g, h


def _as_f64(v, n: int, what: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"{what}: expected {n} per-channel values, got {a.shape[0]}")
    return a


@torch.no_grad()
def fold_unit(unit: nn.Module, name: str, extra_shift=None) -> FoldedUnit:
    """Fold one stage-2 BinaryConvBN; `extra_shift` is a per-channel bias that follows the unit."""
    conv, bn, sign = unit.conv, unit.bn, unit.sign
    where = f"{name} ({type(unit).__name__})"
    if not getattr(conv, "binary_weights", True):
        raise UserError(f"{where} has full-precision weights (a stage-1 student); the packed form needs stage 2 "
                        "(bssl.nn.set_stage(model, 2), or bssl distill with stages = 2), or keep stage 1 in torch")
    if conv.groups != 1 or _square(conv.dilation, "dilation", where) != 1:
        raise UserError(f"{where}: grouped or dilated binary convs are not supported by the packed form")
    k = _square(conv.kernel_size, "kernel", where)
    stride = _square(conv.stride, "stride", where)
    padding = _square(conv.padding, "padding", where)
    w = conv.weight.detach().cpu()
    alpha = w.double().abs().mean(dim=(1, 2, 3)).numpy()
    g, h = bn_affine(bn, where)
    o = int(w.shape[0])
    shift = h if extra_shift is None else h + _as_f64(extra_shift, o, f"{where} extra_shift")
    return FoldedUnit(name=name, in_channels=int(w.shape[1]), out_channels=o, kernel_size=k, stride=stride,
                      padding=padding, pad_value=float(getattr(conv, "pad_value", 1.0)),
                      rsign_bias=sign.bias.detach().cpu().float().numpy(), weight_bits=pack_weight_signs(w),
                      scale=(g * alpha).astype(np.float32), shift=shift.astype(np.float32))


@dataclass(frozen=True, eq=False)
class FoldedStudent:
    """Every BinaryConvBN of a student, folded, and which RPReLU input biases they absorbed.

    `units`: module name -> FoldedUnit, in module order. `absorbed`: RPReLU module name -> the
    units whose shift holds its bias_in (in channel order: two names when it spans the two
    duplicated 1x1 units, first half then second). What remains of those RPReLUs is
    PReLU + bias_out; RPReLUs not listed are untouched.
    """

    units: Mapping[str, FoldedUnit]
    absorbed: Mapping[str, Tuple[str, ...]]

    def __post_init__(self):
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))
        object.__setattr__(self, "absorbed", MappingProxyType({k: tuple(v) for k, v in self.absorbed.items()}))

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[FoldedUnit]:
        return iter(self.units.values())

    def __getitem__(self, name: str) -> FoldedUnit:
        return self.units[name]


def _absorption(model: nn.Module) -> List[Tuple[str, nn.Module, List[Tuple[str, slice]]]]:
    """(RPReLU name, RPReLU, [(unit name, channel slice of its bias_in)]) for every RPReLU that
    directly follows units' outputs plus a residual."""
    from ..models.birealnet import BiRealUnit
    from ..models.reactnet import ReActBlock
    from ..nn import RPReLU

    out = []
    for name, blk in model.named_modules():
        pre = f"{name}." if name else ""
        if isinstance(blk, ReActBlock):
            if isinstance(blk.act1, RPReLU):  # act1(unit3x3(x) + pool(x))
                out.append((pre + "act1", blk.act1, [(pre + "unit3x3", slice(None))]))
            if not isinstance(blk.act2, RPReLU):
                continue
            if blk.downsample == "none":  # act2(unit1x1(out1) + out1)
                out.append((pre + "act2", blk.act2, [(pre + "unit1x1", slice(None))]))
            elif blk.downsample == "binary":  # act2(cat(unit1x1_a(.) + out1, unit1x1_b(.) + out1))
                c = blk.in_channels
                out.append((pre + "act2", blk.act2, [(pre + "unit1x1_a", slice(0, c)), (pre + "unit1x1_b", slice(c, 2 * c))]))
        elif isinstance(blk, BiRealUnit) and isinstance(blk.act, RPReLU):  # act(unit(x) + shortcut(x))
            out.append((pre + "act", blk.act, [(pre + "unit", slice(None))]))
    return out


def binary_units(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(module name, unit) for every BinaryConvBN of a model, in module order."""
    from ..nn import BinaryConvBN

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConvBN)]


@torch.no_grad()
def fold_student(model: nn.Module, absorb_rprelu: bool = True) -> FoldedStudent:
    """Fold every BinaryConvBN of a student (eval statistics).

    `absorb_rprelu`: move the input bias of an RPReLU that follows units into their shifts (a fused
    epilogue saves an add). Op-by-op export graphs keep it where the student has it: absorbing it there
    saves nothing and changes the order of the float adds before the next sign, which flips signs of
    inputs within rounding of zero more often than the student's own order does."""
    units = binary_units(model)
    if not units:
        raise UserError(f"{type(model).__name__} has no bssl.nn.BinaryConvBN unit: nothing to fold "
                        "(build the student with bssl.models.build_model)")
    names = {n for n, _ in units}
    extra: Dict[str, np.ndarray] = {}
    absorbed: Dict[str, Tuple[str, ...]] = {}
    for act_name, act, parts in (_absorption(model) if absorb_rprelu else ()):
        if not all(u in names for u, _ in parts):
            continue
        bias_in = act.bias_in.detach().cpu().double().numpy()
        for unit_name, sl in parts:
            extra[unit_name] = bias_in[sl]
        absorbed[act_name] = tuple(u for u, _ in parts)
    return FoldedStudent({n: fold_unit(m, n, extra.get(n)) for n, m in units}, absorbed)


class PReLUOut(nn.Module):
    """What remains of an RPReLU whose input bias a FoldedStudent absorbed: PReLU(x) + bias_out."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.prelu = act.prelu
        self.bias_out = act.bias_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x) + self.bias_out.view(1, -1, 1, 1)


def strip_absorbed(model: nn.Module, folded: FoldedStudent) -> None:
    """In place: replace each RPReLU listed in folded.absorbed by its PReLUOut."""
    for act_name in folded.absorbed:
        model.set_submodule(act_name, PReLUOut(model.get_submodule(act_name)))


__all__ = ["FoldedUnit", "FoldedStudent", "fold_unit", "fold_student", "bn_affine", "binary_units",
           "pack_weight_signs", "PReLUOut", "strip_absorbed"]
