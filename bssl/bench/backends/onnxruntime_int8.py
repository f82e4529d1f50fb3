"""onnxruntime CPU on a static int8 QDQ quantisation of the FP32 ONNX export
(onnxruntime.quantization.quantize_static, per-channel weights, calibrated on embedded data)."""

from __future__ import annotations

from typing import Any, Callable, Dict

from . import BACKENDS, Backend, PrepareContext
from .onnxruntime_fp32 import ort_session
from ..models import ModelRef


@BACKENDS.register("onnxruntime-int8")
class OnnxRuntimeInt8(Backend):
    name = "onnxruntime-int8"
    description = "onnxruntime CPU, static int8 QDQ"
    install_hint = "pip install onnxruntime onnx"
    imports = ("numpy", "onnxruntime")
    file_kinds = ("onnx",)

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        from ..onnx_files import int8_onnx

        path = int8_onnx(ref, ctx)
        return {"path": str(path), "bytes": path.stat().st_size}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        return ort_session(artifact["path"], threads)
