"""Export a binary student for deployment: ONNX (standard / packed), TVM libraries, LCE .tflite,
model.bssl for the native runtime.

    from bssl.export import export_model
    export_model("runs/x/student.pt", "tvm", "exports/", target="aarch64")

`export_model(checkpoint_or_model, fmt, out_dir, target=None, **opts) -> dict` with keys
`format`, `path`, `bytes`, `target` and the checks done (equivalence against the PyTorch
student, popcount instructions in ARM libraries, ...). Formats are registered in FORMATS;
details and op schema: docs/export.md. Heavy imports (onnx, tvm) happen per format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import UserError
from ..registry import Registry
from . import ops  # registers the bssl::binary_conv2d torch op

FORMATS: Registry = Registry("export format")

# File or folder name of each format inside out_dir.
OUTPUT_NAMES = {"onnx": "model.onnx", "onnx-packed": "model.packed.onnx", "lce": "model.tflite", "bssl": "model.bssl"}


# --target values of the bssl format: a folder with model.bssl and a static bssl-infer
BSSL_TARGETS = ("x86-64", "aarch64", "armv7")


def output_path(out_dir: Path, fmt: str, target: Optional[str] = None) -> Path:
    if fmt == "tvm":
        return Path(out_dir) / f"tvm-{target}"
    if fmt == "bssl" and target:
        return Path(out_dir) / f"bssl-{target}"
    return Path(out_dir) / OUTPUT_NAMES[fmt]


@FORMATS.register("onnx")
def _onnx(src, out_dir: Path, target=None, **opts) -> Dict[str, Any]:
    from .onnx_export import export_onnx

    return export_onnx(src, output_path(out_dir, "onnx"), packed=False, **opts)


@FORMATS.register("onnx-packed")
def _onnx_packed(src, out_dir: Path, target=None, **opts) -> Dict[str, Any]:
    from .onnx_export import export_onnx

    return export_onnx(src, output_path(out_dir, "onnx-packed"), packed=True, **opts)


@FORMATS.register("tvm")
def _tvm(src, out_dir: Path, target=None, **opts) -> Dict[str, Any]:
    from .targets import get_target
    from .tvm_export import export_tvm

    name = get_target(target or "x86-64").name
    return export_tvm(src, output_path(out_dir, "tvm", name), name, **opts)


@FORMATS.register("lce")
def _lce(src, out_dir: Path, target=None, **opts) -> Dict[str, Any]:
    from .lce import export_lce

    return export_lce(src, output_path(out_dir, "lce"), **opts)


@FORMATS.register("bssl")
def _bssl(src, out_dir: Path, target=None, **opts) -> Dict[str, Any]:
    """model.bssl for the native runtime and bssl-infer (docs/model-format.md); with a target
    (x86-64, aarch64, armv7) a folder bssl-<target> holding model.bssl, a statically linked
    bssl-infer for that target and README.txt (docs/arm.md)."""
    from ..classifier import classifier_info_of, write_sidecar
    from ..deploy.model_file import export_bssl, export_bssl_target

    if target is not None and target not in BSSL_TARGETS:
        raise UserError(f"--target {target!r} is not a bssl target; choose one of {', '.join(BSSL_TARGETS)}")
    info = classifier_info_of(src)
    if info:  # a classifier: class names in the header; preprocessing and accuracy in model.bssl.json
        opts.setdefault("class_names", list(info["classes"]))
    if target is None:
        result = export_bssl(src, output_path(out_dir, "bssl"), **opts)
        model_path = output_path(out_dir, "bssl")
    else:
        result = export_bssl_target(src, output_path(out_dir, "bssl", target), target, **opts)
        model_path = Path(result["model_path"])
    if info:
        result["classes"] = list(info["classes"])
        result["sidecar"] = str(write_sidecar(model_path, info, "bssl"))
    return result


def export_model(checkpoint_or_model, fmt: str, out_dir, target: Optional[str] = None, **opts) -> Dict[str, Any]:
    """Export a student (checkpoint path or nn.Module) in format `fmt` into `out_dir`.

    opts per format: check_samples (random inputs compared with PyTorch; 0 = skip), seed,
    input_size; tvm: batch; onnx*: opset; lce: larq_python; bssl: float16, class_names (target:
    x86-64, aarch64 or armv7 for a deployable folder with a static bssl-infer).
    """
    exporter: Callable[..., Dict[str, Any]] = FORMATS.get(fmt)
    if target is not None and fmt not in ("tvm", "bssl"):
        raise UserError(f"--target applies to the tvm and bssl formats only, not {fmt!r}")
    from .fold import load_student_model

    model = load_student_model(checkpoint_or_model)
    result = exporter(model, Path(out_dir), target=target, **opts)
    result.setdefault("target", target)
    return result


__all__ = ["FORMATS", "BSSL_TARGETS", "export_model", "output_path"]
