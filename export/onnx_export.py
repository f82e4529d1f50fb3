"""ONNX exports: `onnx` (standard ops, runs in onnxruntime) and `onnx-packed` (ai.bssl 1-bit nodes).

Both come from `torch.onnx.export` (the torch.export-based exporter) of the folded inference
graph (export/fold.py): input "input" with a dynamic batch axis, outputs "logits" and
"features". The packed graph maps each `bssl::binary_conv2d` to `ai.bssl::BinaryConv2d`
through the exporter's public `custom_translation_table`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..classifier import classifier_info_of, metadata_props
from ..errors import UserError
from ..utils import atomic_path
from . import fold, ops

OPSET = 18
INPUT, OUTPUTS = "input", ("logits", "features")


def to_onnx_proto(src, packed: bool, input_size: int | None = None, opset: int = OPSET):
    """The ONNX ModelProto of a student's folded inference graph."""
    import onnx

    model = fold.deploy_model(src, packed)
    size = input_size or fold.input_size_of(fold.load_student_model(src))
    x = torch.zeros(2, 3, size, size)
    extra: Dict[str, Any] = {}
    if packed:
        extra["custom_translation_table"] = ops.onnx_translation_table()
    proto = _export_proto(model, x, opset, "the student", **extra)
    if packed:
        ops.register_onnx_schema()
    onnx.checker.check_model(proto)
    return proto


def _export_proto(model, x: torch.Tensor, opset: int, what: str, **extra):
    """torch.onnx.export of `model` on `x` with the exports' input/output names and a dynamic batch."""
    # The exporter prints progress lines and warnings; keep the CLI output to our own summary.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model, (x,), None, input_names=[INPUT], output_names=list(OUTPUTS), opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False, **extra,
            )
        except Exception as exc:
            raise UserError(f"ONNX export of {what} failed: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200]}") from None
    proto = program.model_proto
    proto.producer_name = "bssl"
    return proto


def run_onnxruntime(path: Path, x: np.ndarray) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits, feats = sess.run(list(OUTPUTS), {INPUT: x.astype(np.float32)})
    return {"logits": logits, "features": feats}


def run_reference_packed(path_or_proto, x: np.ndarray) -> Dict[str, np.ndarray]:
    """Evaluate an onnx-packed graph with onnx's reference runtime and numpy XNOR-popcount."""
    from onnx.reference import ReferenceEvaluator

    ops.register_onnx_schema()
    ev = ReferenceEvaluator(str(path_or_proto) if isinstance(path_or_proto, Path) else path_or_proto,
                            new_ops=[ops.onnx_reference_op()])
    logits, feats = ev.run(list(OUTPUTS), {INPUT: x.astype(np.float32)})
    return {"logits": logits, "features": feats}


def export_onnx(src, out_path: Path, packed: bool = False, check_samples: int = 8, opset: int = OPSET,
                input_size: int | None = None, seed: int = 0) -> Dict[str, Any]:
    """Write the ONNX file atomically; check it against the PyTorch student on random inputs."""
    import onnx

    student = fold.load_student_model(src)
    size = input_size or fold.input_size_of(student)
    proto = to_onnx_proto(student, packed, size, opset)
    out_path = Path(out_path)
    result: Dict[str, Any] = {"format": "onnx-packed" if packed else "onnx", "opset": opset,
                              "inputs": [INPUT], "outputs": list(OUTPUTS), "input_size": size}
    if packed:
        result["packed_nodes"] = sum(1 for n in proto.graph.node if n.domain == ops.DOMAIN)
    info = classifier_info_of(student)
    if info:  # a classifier: class names, preprocessing and trained accuracy travel in metadata_props
        onnx.helper.set_model_props(proto, metadata_props(info))
        result["classes"] = list(info["classes"])
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        if check_samples:
            x = fold.check_inputs(check_samples, size, seed)
            ref_logits, ref_feats = fold.reference_outputs(student, x)
            got = run_reference_packed(tmp, x.numpy()) if packed else run_onnxruntime(tmp, x.numpy())
            cmp = fold.compare(ref_logits, got["logits"])
            cmp["features"] = fold.compare(ref_feats, got["features"])
            cmp["runtime"] = "onnx.reference + numpy popcount" if packed else "onnxruntime"
            result["equivalence"] = cmp
    result["path"] = str(out_path)
    result["bytes"] = out_path.stat().st_size
    return result


class _FloatClassifier(torch.nn.Module):
    """An FP backbone and a task head with the outputs of a student export: (logits, features)."""

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        feats = self.backbone(x).flatten(1)
        return self.head(feats), feats


def export_float_classifier(backbone: torch.nn.Module, head: torch.nn.Linear, out_path: Path, input_size: int,
                            info: Dict[str, Any], check_samples: int = 8, seed: int = 0) -> Dict[str, Any]:
    """ONNX FP32 file of an FP backbone (a teacher) with a task head, with the classifier metadata of a student
    classifier export; checked against PyTorch on random inputs. The float reference a binary classifier replaces."""
    import onnx

    model = _FloatClassifier(copy.deepcopy(backbone).cpu().float(), copy.deepcopy(head).cpu().float()).eval()
    proto = _export_proto(model, torch.zeros(2, 3, input_size, input_size), OPSET, "the FP classifier")
    onnx.helper.set_model_props(proto, metadata_props(info))
    onnx.checker.check_model(proto)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"format": "onnx", "opset": OPSET, "inputs": [INPUT], "outputs": list(OUTPUTS),
                              "input_size": int(input_size), "classes": list(info["classes"])}
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        if check_samples:
            x = fold.check_inputs(check_samples, input_size, seed)
            with torch.no_grad():
                ref_logits, ref_feats = model(x)
            got = run_onnxruntime(tmp, x.numpy())
            cmp = fold.compare(ref_logits, got["logits"])
            cmp["features"] = fold.compare(ref_feats, got["features"])
            cmp["runtime"] = "onnxruntime"
            result["equivalence"] = cmp
    result["path"] = str(out_path)
    result["bytes"] = out_path.stat().st_size
    return result
