"""Turn a trained student into an inference graph: BN folded, binary convs explicit.

Every BinaryConvBN unit (found by class, see docs/ARCHITECTURE.md) is folded once by
bssl.deploy.fold.fold_student (the numbers every packed consumer shares) and replaced by
  - `FoldedBinaryConv` (standard ops: Where(Less(x+b, 0), -1, 1), Pad(pad_value), Conv with
    scale * sign(W) as weights and shift as bias), or
  - `PackedBinaryConv` (one `bssl::binary_conv2d` op with the FoldedUnit's 1-bit packed weights
    and its per-channel scale/shift);
RPReLUs whose input bias fold_student absorbed keep PReLU + output bias. Then torch.fx's conv+BN fusion folds the remaining FP Conv2d -> BatchNorm2d pairs (stem, -B/-C).
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
from ..deploy.fold import PReLUOut, binary_units, bn_affine, fold_student, fold_unit, strip_absorbed
from . import ops  # noqa: F401  (registers the bssl::binary_conv2d op)

# Leaf modules whose forward uses only standard tensor ops every export route maps.
SUPPORTED_LEAVES = (
    nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.PReLU, nn.Hardtanh, nn.AvgPool2d, nn.MaxPool2d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout,
)


def _bssl_nn():
    from .. import nn as bnn

    return bnn


def load_student_model(src) -> nn.Module:
    """A student from a checkpoint path (kind "student" or "classifier") or an nn.Module, in eval mode, on CPU."""
    if isinstance(src, nn.Module):
        model = src
    else:
        from ..classifier import KIND, checkpoint_kind, load_classifier
        from ..models import load_student

        path = Path(src)  # a classifier checkpoint is a student whose head scores the user's classes
        model = load_classifier(path) if path.is_file() and checkpoint_kind(path) == KIND else load_student(path)
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


class FoldedBinaryConv(nn.Module):
    """Standard-op form of a BinaryConvBN unit: Conv with scale * sign(W) as weight and shift as bias.

    Stage 2 takes every number from the unit's FoldedUnit (bssl.deploy.fold); a stage-1 unit (FP
    weights, no packed form) gets its BatchNorm folded into the FP weights with the same bn_affine."""

    def __init__(self, unit: nn.Module, where: str, folded=None):
        super().__init__()
        conv = unit.conv
        if conv.binary_weights:
            f = folded if folded is not None else fold_unit(unit, where)
            sign = torch.from_numpy(f.weight_signs())
            weight = sign * torch.tensor(f.scale).view(-1, 1, 1, 1)  # exact: +-1 times a float32
            bias, shift, pad_value = f.rsign_bias, f.shift, f.pad_value
            stride, padding, dilation, groups = (f.stride,) * 2, (f.padding,) * 2, (1, 1), 1
        else:
            g, h = bn_affine(unit.bn, where)
            weight = (conv.weight.detach().cpu().double() * torch.from_numpy(g).view(-1, 1, 1, 1)).float()
            bias = unit.sign.bias.detach().cpu().float().numpy()
            shift, pad_value = h.astype(np.float32), float(conv.pad_value)
            stride, padding, dilation, groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.register_buffer("bias", torch.tensor(np.asarray(bias, dtype=np.float32)).reshape(-1))
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("shift", torch.tensor(np.asarray(shift, dtype=np.float32)))
        self.pad_value = float(pad_value)
        self.stride, self.dilation, self.groups = tuple(stride), tuple(dilation), int(groups)
        ph, pw = padding
        self.pads = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Where(Less) rather than Sign: ONNX Sign(0) = 0, the project's sign(0) = +1.
        s = torch.where(x + self.bias.view(1, -1, 1, 1) < 0, -1.0, 1.0)
        if any(self.pads):
            s = F.pad(s, self.pads, value=self.pad_value)
        return F.conv2d(s, self.weight, self.shift, self.stride, 0, self.dilation, self.groups)


class PackedBinaryConv(nn.Module):
    """A BinaryConvBN unit as one `bssl::binary_conv2d` op carrying its FoldedUnit's bits, scale, shift."""

    def __init__(self, unit: nn.Module, where: str, folded=None):
        super().__init__()
        f = folded if folded is not None else fold_unit(unit, where)
        if f.needs_correction:
            raise UserError(f"{where} pads with {f.pad_value}; the packed kernels implement one-padding only "
                            "(pad_value=1, larq's pad_values=1): use the 'onnx' format or retrain with pad_value=1")
        self.kernel, self.stride, self.padding = f.kernel_size, f.stride, f.padding
        self.in_channels = f.in_channels
        self.register_buffer("bias", torch.from_numpy(f.rsign_bias.copy()))
        self.register_buffer("wbits", torch.from_numpy(f.weight_bytes().copy()))  # the uint64 words' bytes
        self.register_buffer("scale", torch.from_numpy(f.scale.copy()))
        self.register_buffer("shift", torch.from_numpy(f.shift.copy()))

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
    """Swap every BinaryConvBN for its folded form (RPReLUs keep their input bias: see fold_student)."""
    units = binary_units(model)
    folded = None
    if packed or all(u.conv.binary_weights for _, u in units):
        # the graph runs op by op: RPReLUs keep their input bias, in the student's order of adds
        folded = fold_student(model, absorb_rprelu=False)  # UserError for stage-1 units when packed
    for name, unit in units:
        f = folded[name] if folded is not None else None
        model.set_submodule(name, (PackedBinaryConv if packed else FoldedBinaryConv)(unit, name, f))
    if folded is not None:
        strip_absorbed(model, folded)
    return len(units)


def check_supported(model: nn.Module) -> None:
    """UserError naming the first layer no export route can map."""
    bnn = _bssl_nn()
    for name, m in model.named_modules():
        if isinstance(m, (bnn.BinaryConv2d, bnn.RSign)):
            raise UserError(f"layer {name} ({type(m).__name__}) is a binary layer outside a BinaryConvBN unit; "
                            "export finds binary convs by bssl.nn.BinaryConvBN, build the model from such units")
        if isinstance(m, (FoldedBinaryConv, PackedBinaryConv, bnn.RPReLU, PReLUOut, WithFeatures)):
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
    report the share of samples within `tol` and the median error (docs/export.md), and which
    samples are outside `tol` or have another top-1 (`outside`).
    """
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    span = np.maximum(ref.max(axis=1) - ref.min(axis=1), 1e-12)
    rel = np.abs(ref - got).max(axis=1) / span
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "max_rel_error": float(rel.max()),
            "median_rel_error": float(np.median(rel)), "within_tol": float((rel < tol).mean()), "tol": tol,
            "samples": int(ref.shape[0]),
            "outside": [int(i) for i in np.flatnonzero((rel >= tol) | (ref.argmax(1) != got.argmax(1)))]}


def check_inputs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
