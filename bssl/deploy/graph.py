"""Lowering of a binary student to the op list of the native runtime (docs/model-format.md).

`lower_student(model, input_size)` returns a `Graph`: values (float NHWC maps), ops with fused
epilogues and their tensors. The binary units come folded from `fold_student` (scale, shift,
packed sign(W)); this module only places them in the graph
and folds the FP convolutions' BatchNorms (`bn_affine`) into their weights.

Supported: ReActNet-A/B/C (`bssl.models.ReActNet`), Bi-Real-18 and ReActNet-18
(`BiRealNet18`), both stems, any width, one- or zero-padded binary units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .fold import FoldedStudent, FoldedUnit, bn_affine, fold_student

OP_TYPES = {"conv": 1, "bconv": 2, "avgpool": 3, "maxpool": 4, "global_avgpool": 5, "linear": 6}

# field order of each op type in the file (after the type word)
OP_FIELDS: Dict[str, Tuple[str, ...]] = {
    "conv": ("in", "out", "cin", "cout", "k", "stride", "pad", "groups", "weight", "bias", "residual",
             "bias_in", "slope", "bias_out"),
    "bconv": ("in", "out", "cin", "cout", "k", "stride", "pad", "offset", "pad_value", "rsign_bias", "weight",
              "scale", "shift", "residual", "bias_in", "slope", "bias_out"),
    "avgpool": ("in", "out", "k", "stride"),
    "maxpool": ("in", "out", "k", "stride", "pad"),
    "global_avgpool": ("in", "out"),
    "linear": ("in", "out", "weight", "bias"),
}
# fields holding ids that may be absent
OPTIONAL = {"bias", "residual", "bias_in", "slope", "bias_out"}


@dataclass
class Op:
    kind: str
    fields: Dict[str, object]
    name: str = ""


@dataclass
class Graph:
    """The lowered student: value shapes (C, H, W), ops in execution order, tensors by id."""

    name: str
    input_shape: Tuple[int, int, int]
    values: List[Tuple[int, int, int]] = field(default_factory=list)
    ops: List[Op] = field(default_factory=list)
    tensors: List[np.ndarray] = field(default_factory=list)
    features: int = -1
    logits: int = -1

    def value(self, c: int, h: int, w: int) -> int:
        self.values.append((int(c), int(h), int(w)))
        return len(self.values) - 1

    def tensor(self, a: Optional[np.ndarray]) -> Optional[int]:
        if a is None:
            return None
        self.tensors.append(np.ascontiguousarray(a))
        return len(self.tensors) - 1

    def add(self, kind: str, name: str = "", **fields) -> None:
        missing = [f for f in OP_FIELDS[kind] if f not in fields and f not in OPTIONAL]
        if missing:
            raise ValueError(f"op {kind} lacks {missing}")
        self.ops.append(Op(kind, fields, name))

    def count(self, kind: str) -> int:
        return sum(op.kind == kind for op in self.ops)


def blocked_weight_bits(bits: np.ndarray) -> np.ndarray:
    """(O, k, k, Cw) sign words -> (ceil(O/32), k*k*Cw, 32), the layout the kernels read."""
    o = bits.shape[0]
    flat = np.ascontiguousarray(bits, dtype=np.uint64).reshape(o, -1)
    nblk = (o + 31) // 32
    padded = np.zeros((nblk * 32, flat.shape[1]), dtype=np.uint64)
    padded[:o] = flat
    return np.ascontiguousarray(padded.reshape(nblk, 32, -1).transpose(0, 2, 1))


def _square(v, what: str, where: str) -> int:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise UserError(f"{where}: the native runtime needs a square {what}, got {tuple(v)}")
    return int(a)


def _fp_conv_bn(conv: nn.Conv2d, bn: Optional[nn.Module], where: str):
    """Float conv (+ eval BatchNorm folded in): weight (k, k, cin/groups, cout), bias (cout,)."""
    if getattr(conv, "padding_mode", "zeros") != "zeros" or isinstance(conv.padding, str):
        raise UserError(f"{where}: the native runtime needs explicit zero padding")
    k = _square(conv.kernel_size, "kernel", where)
    if _square(conv.dilation, "dilation", where) != 1:
        raise UserError(f"{where}: dilated convolutions are not supported by the native runtime")
    w = conv.weight.detach().cpu().double().numpy()
    b = conv.bias.detach().cpu().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
    if bn is not None:
        g, h = bn_affine(bn, where)
        w = w * g[:, None, None, None]
        b = b * g + h
    return dict(k=k, stride=_square(conv.stride, "stride", where), pad=_square(conv.padding, "padding", where),
                groups=int(conv.groups), weight=np.ascontiguousarray(w.transpose(2, 3, 1, 0)).astype(np.float32),
                bias=b.astype(np.float32), cin=int(conv.in_channels), cout=int(conv.out_channels))


class _Lowering:
    def __init__(self, model: nn.Module, folded: FoldedStudent, graph: Graph):
        self.model, self.folded, self.g = model, folded, graph
        self.names = {id(m): n for n, m in model.named_modules()}
        self.used: set = set()

    def unit(self, module: nn.Module) -> FoldedUnit:
        name = self.names[id(module)]
        self.used.add(name)
        return self.folded[name]

    def act(self, module: nn.Module, sl: slice = slice(None)) -> Dict[str, Optional[int]]:
        """Epilogue tensors of an RPReLU (or nothing for Identity); bias_in only when not absorbed."""
        from ..nn import RPReLU

        if isinstance(module, nn.Identity):
            return {}
        if not isinstance(module, RPReLU):
            raise UserError(f"{self.names.get(id(module), type(module).__name__)}: the native runtime lowers "
                            f"RPReLU or Identity activations, not {type(module).__name__}")
        c = module.channels
        slope = module.prelu.weight.detach().cpu().float().numpy().reshape(-1)
        if slope.size == 1:
            slope = np.full(c, slope[0], dtype=np.float32)
        t = self.g.tensor
        out = {"slope": t(slope[sl]), "bias_out": t(module.bias_out.detach().cpu().float().numpy()[sl])}
        if self.names[id(module)] not in self.folded.absorbed:
            out["bias_in"] = t(module.bias_in.detach().cpu().float().numpy()[sl])
        return out

    def bconv(self, u: FoldedUnit, vin: int, vout: int, offset: int = 0, residual: Optional[int] = None,
              epilogue: Optional[Dict] = None) -> None:
        t = self.g.tensor
        self.g.add("bconv", u.name, **{"in": vin}, out=vout, cin=u.in_channels, cout=u.out_channels,
                   k=u.kernel_size, stride=u.stride, pad=u.padding, offset=offset, pad_value=float(u.pad_value),
                   rsign_bias=t(u.rsign_bias), weight=t(blocked_weight_bits(u.weight_bits)), scale=t(u.scale),
                   shift=t(u.shift), residual=residual, **(epilogue or {}))

    def conv(self, conv: nn.Conv2d, bn, vin: int, where: str, residual: Optional[int] = None,
             epilogue: Optional[Dict] = None) -> int:
        p = _fp_conv_bn(conv, bn, where)
        c, h, w = self.g.values[vin]
        if c != p["cin"]:
            raise UserError(f"{where}: expects {p['cin']} channels, gets {c}")
        ho, wo = (h + 2 * p["pad"] - p["k"]) // p["stride"] + 1, (w + 2 * p["pad"] - p["k"]) // p["stride"] + 1
        vout = self.g.value(p["cout"], ho, wo)
        t = self.g.tensor
        self.g.add("conv", where, **{"in": vin}, out=vout, cin=p["cin"], cout=p["cout"], k=p["k"], stride=p["stride"],
                   pad=p["pad"], groups=p["groups"], weight=t(p["weight"]), bias=t(p["bias"]), residual=residual,
                   **(epilogue or {}))
        return vout

    def pool(self, kind: str, vin: int, k: int, s: int, p: int = 0) -> int:
        c, h, w = self.g.values[vin]
        vout = self.g.value(c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        extra = {"pad": p} if kind == "maxpool" else {}
        self.g.add(kind, **{"in": vin}, out=vout, k=k, stride=s, **extra)
        return vout

    def stem(self, stem: nn.Sequential, v: int) -> int:
        mods = list(stem)
        if len(mods) < 2 or not isinstance(mods[0], nn.Conv2d) or not isinstance(mods[1], nn.BatchNorm2d):
            raise UserError("the native runtime expects a stem of Conv2d + BatchNorm2d [+ MaxPool2d]")
        v = self.conv(mods[0], mods[1], v, self.names[id(mods[0])])
        for m in mods[2:]:
            if isinstance(m, nn.MaxPool2d):
                k = _square(m.kernel_size, "kernel", "stem maxpool")
                s = _square(m.stride, "stride", "stem maxpool")
                p = _square(m.padding, "padding", "stem maxpool")
                if _square(m.dilation, "dilation", "stem maxpool") != 1 or m.ceil_mode:
                    raise UserError("stem maxpool: dilation and ceil_mode are not supported by the native runtime")
                v = self.pool("maxpool", v, k, s, p)
            elif not isinstance(m, nn.Identity):
                raise UserError(f"stem: the native runtime cannot lower {type(m).__name__}")
        return v

    def reactnet_block(self, blk, v: int) -> int:
        c, h, w = self.g.values[v]
        u3 = self.unit(blk.unit3x3)
        res = self.pool("avgpool", v, 2, 2) if blk.stride == 2 else v
        ho, wo = u3.output_size(h, w)
        out1 = self.g.value(c, ho, wo)
        self.bconv(u3, v, out1, residual=res, epilogue=self.act(blk.act1))
        if blk.downsample == "none":
            u1 = self.unit(blk.unit1x1)
            out2 = self.g.value(c, ho, wo)
            self.bconv(u1, out1, out2, residual=out1, epilogue=self.act(blk.act2))
        elif blk.downsample == "binary":
            ua, ub = self.unit(blk.unit1x1_a), self.unit(blk.unit1x1_b)
            out2 = self.g.value(2 * c, ho, wo)
            self.bconv(ua, out1, out2, 0, residual=out1, epilogue=self.act(blk.act2, slice(0, c)))
            self.bconv(ub, out1, out2, c, residual=out1, epilogue=self.act(blk.act2, slice(c, 2 * c)))
        else:  # ReActNet-B/C: bn(conv1x1(out1)) + cat(out1, out1), then the RPReLU
            out2 = self.conv(blk.conv1x1, blk.bn1x1, out1, self.names[id(blk.conv1x1)], residual=out1,
                             epilogue=self.act(blk.act2))
        return out2

    def bireal_unit(self, unit, v: int) -> int:
        c, h, w = self.g.values[v]
        u = self.unit(unit.unit)
        res = v
        if isinstance(unit.shortcut, nn.Sequential):
            pool, conv, bn = list(unit.shortcut)
            res = v
            if isinstance(pool, nn.AvgPool2d):
                k = _square(pool.kernel_size, "kernel", "shortcut pool")
                res = self.pool("avgpool", v, k, _square(pool.stride, "stride", "shortcut pool"))
            res = self.conv(conv, bn, res, self.names[id(conv)])
        elif not isinstance(unit.shortcut, nn.Identity):
            raise UserError(f"{self.names[id(unit)]}: unexpected shortcut {type(unit.shortcut).__name__}")
        ho, wo = u.output_size(h, w)
        out = self.g.value(u.out_channels, ho, wo)
        self.bconv(u, v, out, residual=res, epilogue=self.act(unit.act))
        return out

    def head(self, v: int, classifier: nn.Linear) -> None:
        c = self.g.values[v][0]
        self.g.features = self.g.value(c, 1, 1)
        self.g.add("global_avgpool", **{"in": v}, out=self.g.features)
        if not isinstance(classifier, nn.Linear) or classifier.in_features != c:
            raise UserError(f"the classifier must be an nn.Linear over the {c} features")
        n = classifier.out_features
        self.g.logits = self.g.value(n, 1, 1)
        w = classifier.weight.detach().cpu().float().numpy()
        b = classifier.bias.detach().cpu().float().numpy() if classifier.bias is not None else None
        self.g.add("linear", **{"in": self.g.features}, out=self.g.logits,
                   weight=self.g.tensor(np.ascontiguousarray(w.T)), bias=self.g.tensor(b))


@torch.no_grad()
def lower_student(model: nn.Module, input_size: Optional[int] = None, *, folded: Optional[FoldedStudent] = None,
                  in_channels: int = 3) -> Graph:
    """The op graph of an eval-mode student for square inputs of `input_size` (default: its spec)."""
    from ..models.birealnet import BiRealNet18
    from ..models.reactnet import ReActNet

    spec = getattr(model, "spec", None) or {}
    size = int(input_size or spec.get("input_size") or 224)
    model = model.eval()
    # RPReLU input biases stay in the epilogue after the residual, as the student adds them: the
    # same float order before each sign, so fewer signs of inputs within rounding of 0 flip (measured:
    # ReActNet-A 32 px from 99.6% to 100% of inputs within 1e-3 of the logit range); one add more
    folded = folded if folded is not None else fold_student(model, absorb_rprelu=False)
    g = Graph(name=str(spec.get("name", type(model).__name__)), input_shape=(in_channels, size, size))
    low = _Lowering(model, folded, g)
    v = g.value(in_channels, size, size)
    if isinstance(model, ReActNet):
        v = low.stem(model.stem, v)
        for blk in model.blocks:
            v = low.reactnet_block(blk, v)
    elif isinstance(model, BiRealNet18):
        v = low.stem(model.stem, v)
        for unit in model.blocks:
            v = low.bireal_unit(unit, v)
    else:
        raise UserError(f"the native runtime lowers ReActNet and Bi-Real students, not {type(model).__name__}")
    if not isinstance(model.pool, nn.AdaptiveAvgPool2d) or _square(model.pool.output_size, "output size", "pool") != 1:
        raise UserError("the native runtime expects global average pooling before the classifier")
    low.head(v, model.classifier)
    left = set(folded.units) - low.used
    if left:
        raise UserError(f"binary units not placed in the graph: {sorted(left)}")
    for c, h, w in g.values:
        if h < 1 or w < 1:
            raise UserError(f"input size {size} is too small for {g.name}: a map shrinks to {h}x{w}")
    return g


__all__ = ["Graph", "Op", "OP_TYPES", "OP_FIELDS", "lower_student", "blocked_weight_bits"]
