"""Turn a trained student into an inference graph: BN folded, binary convs explicit.

Every BinaryConvBN unit (found by class, see docs/ARCHITECTURE.md) is replaced by
  - `FoldedBinaryConv` (standard ops: Where(Less(x+b, 0), -1, 1), Pad(+1), Conv with
    alpha * sign(W) * BN-scale folded into the weights and the BN shift as bias), or
  - `PackedBinaryConv` (one `bssl::binary_conv2d` op with 1-bit packed weights and the fused
    per-channel scale/shift),
then torch.fx's conv+BN fusion folds the remaining FP Conv2d -> BatchNorm2d pairs (stem, -B/-C).
The result returns (logits, features) so exported graphs carry both outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from . import ops

# Leaf modules whose forward uses only standard tensor ops every export route maps.
SUPPORTED_LEAVES = (
    nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.PReLU, nn.Hardtanh, nn.AvgPool2d, nn.MaxPool2d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout,
)


def _bssl_nn():
    from .. import nn as bnn

    return bnn


def load_student_model(src) -> nn.Module:
    """A student from a checkpoint path (kind "student") or an nn.Module, in eval mode, on CPU."""
    if isinstance(src, nn.Module):
        model = src
    else:
        from ..models import load_student

        model = load_student(Path(src))
    if not (hasattr(model, "features") and isinstance(getattr(model, "classifier", None), nn.Module)):
        raise UserError(
            f"{type(model).__name__} is not a bssl student (needs .features(x) and .classifier); "
            "pass a checkpoint written by `bssl distill` or a model from bssl.models.build_model"
        )
    model = copy.deepcopy(model).cpu().eval()
    if not any(isinstance(m, _bssl_nn().BinaryConvBN) for m in model.modules()):
        raise UserError(f"{type(model).__name__} has no BinaryConvBN unit, so it is not a binary student; "
                        "export the student written by `bssl distill`, not a teacher")
    return model


def input_size_of(model: nn.Module, default: int = 224) -> int:
    spec = getattr(model, "spec", None) or {}
    size = spec.get("input_size", default)
    return int(size) if isinstance(size, int) else default


def _bn_affine(bn: nn.BatchNorm2d, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = g * x + h per channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise UserError(f"{where}.bn has no running statistics (track_running_stats=False); it cannot be folded")
    g = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        g = g * bn.weight.double()
    h = -bn.running_mean.double() * g
    if bn.bias is not None:
        h = h + bn.bias.double()
    return g, h


@torch.no_grad()
def unit_parameters(unit: nn.Module, where: str, packed: bool) -> Dict[str, object]:
    """The numbers of one BinaryConvBN unit: rsign bias, effective weight, fused scale/shift."""
    conv, bn = unit.conv, unit.bn
    g, h = _bn_affine(bn, where)
    bias = unit.sign.bias.detach().float().reshape(-1)
    info: Dict[str, object] = {"bias": bias, "shift": h.float(), "pad_value": float(conv.pad_value),
                               "stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation,
                               "groups": conv.groups, "in_channels": conv.in_channels}
    w = conv.weight.detach().double()
    if conv.binary_weights:
        alpha = w.abs().mean(dim=(1, 2, 3))
        sign = torch.where(w < 0, -1.0, 1.0).double()
        info.update(sign=sign.float(), scale=(alpha * g).float(), folded=(sign * (alpha * g).view(-1, 1, 1, 1)).float())
    else:
        if packed:
            raise UserError(f"{where} has FP weights (a stage-1 student); packed 1-bit exports need a stage-2 "
                            "student (bssl distill with stages = 2)")
        info.update(folded=(w * g.view(-1, 1, 1, 1)).float())
    return info


class FoldedBinaryConv(nn.Module):
    """Standard-op form of a BinaryConvBN unit with BN folded into the conv."""

    def __init__(self, unit: nn.Module, where: str):
        super().__init__()
        p = unit_parameters(unit, where, packed=False)
        self.register_buffer("bias", p["bias"])
        self.register_buffer("weight", p["folded"])
        self.register_buffer("shift", p["shift"])
        self.pad_value = p["pad_value"]
        self.stride, self.dilation, self.groups = p["stride"], p["dilation"], p["groups"]
        ph, pw = p["padding"]
        self.pads = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Where(Less) rather than Sign: ONNX Sign(0) = 0, the project's sign(0) = +1.
        s = torch.where(x + self.bias.view(1, -1, 1, 1) < 0, -1.0, 1.0)
        if any(self.pads):
            s = F.pad(s, self.pads, value=self.pad_value)
        return F.conv2d(s, self.weight, self.shift, self.stride, 0, self.dilation, self.groups)


class PackedBinaryConv(nn.Module):
    """A BinaryConvBN unit as one `bssl::binary_conv2d` op with 1-bit weights."""

    def __init__(self, unit: nn.Module, where: str):
        super().__init__()
        p = unit_parameters(unit, where, packed=True)
        if p["pad_value"] != 1.0:
            raise UserError(f"{where} pads with {p['pad_value']}; the packed kernels implement one-padding only "
                            "(pad_value=1, larq's pad_values=1): use the 'onnx' format or retrain with pad_value=1")
        if p["groups"] != 1 or tuple(p["dilation"]) != (1, 1):
            raise UserError(f"{where} uses groups={p['groups']} dilation={p['dilation']}; the packed export "
                            "supports groups=1, dilation=1")
        self.kernel = ops.square(unit.conv.kernel_size, "kernel", where)
        self.stride = ops.square(p["stride"], "stride", where)
        self.padding = ops.square(p["padding"], "padding", where)
        self.in_channels = int(p["in_channels"])
        self.register_buffer("bias", p["bias"])
        self.register_buffer("wbits", ops.pack_signs(p["sign"]))
        self.register_buffer("scale", p["scale"])
        self.register_buffer("shift", p["shift"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bssl.binary_conv2d(x, self.bias, self.wbits, self.scale, self.shift,
                                           self.in_channels, self.kernel, self.stride, self.padding)


class WithFeatures(nn.Module):
    """forward(x) -> (logits, features): the exported graphs' two named outputs."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor):
        f = self.student.features(x)
        return self.student.classifier(f), f


def _replace_units(model: nn.Module, packed: bool) -> int:
    bnn = _bssl_nn()
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnn.BinaryConvBN):
                where = f"{name}.{child_name}" if name else child_name
                setattr(module, child_name, (PackedBinaryConv if packed else FoldedBinaryConv)(child, where))
                count += 1
    return count


def check_supported(model: nn.Module) -> None:
    """UserError naming the first layer no export route can map."""
    bnn = _bssl_nn()
    for name, m in model.named_modules():
        if isinstance(m, (bnn.BinaryConv2d, bnn.RSign)):
            raise UserError(f"layer {name} ({type(m).__name__}) is a binary layer outside a BinaryConvBN unit; "
                            "export finds binary convs by bssl.nn.BinaryConvBN, build the model from such units")
        if isinstance(m, (FoldedBinaryConv, PackedBinaryConv, bnn.RPReLU, WithFeatures)):
            continue
        if next(m.children(), None) is None and not isinstance(m, SUPPORTED_LEAVES):
            raise UserError(f"unsupported layer {name} ({type(m).__module__}.{type(m).__name__}); export maps "
                            f"{', '.join(t.__name__ for t in SUPPORTED_LEAVES)}, RPReLU and BinaryConvBN units")


def deploy_model(src, packed: bool) -> nn.Module:
    """The inference graph of a student: (logits, features), BN folded, binary convs explicit."""
    student = load_student_model(src)
    _replace_units(student, packed)
    check_supported(student)
    wrapped = WithFeatures(student).eval()
    from torch.fx.experimental.optimization import fuse

    try:
        fused = fuse(wrapped)  # folds FP Conv2d -> BatchNorm2d pairs (stem etc.)
    except Exception as exc:  # symbolic tracing fails on data-dependent Python control flow
        raise UserError(f"the student {type(student).__name__} could not be traced for export "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    return fused.eval()


def reference_outputs(src, x: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Logits and features of the student itself in eval mode (the equivalence reference)."""
    student = load_student_model(src)
    with torch.no_grad():
        f = student.features(x)
        return student.classifier(f).numpy(), f.numpy()


def compare(ref: np.ndarray, got: np.ndarray, tol: float = 1e-3) -> Dict[str, float]:
    """Top-1 agreement and errors relative to each sample's logit range.

    A binary net amplifies 1-ulp differences at a sign input that is almost exactly 0 into a
    flipped bit (every backend rounds conv/BN sums in its own order), so beside the max we
    report the share of samples within `tol` and the median error (docs/export.md).
    """
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    span = np.maximum(ref.max(axis=1) - ref.min(axis=1), 1e-12)
    rel = np.abs(ref - got).max(axis=1) / span
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "max_rel_error": float(rel.max()),
            "median_rel_error": float(np.median(rel)), "within_tol": float((rel < tol).mean()), "tol": tol,
            "samples": int(ref.shape[0])}


def check_inputs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
