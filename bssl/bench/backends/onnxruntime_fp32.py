"""onnxruntime CPU execution provider on the FP32 ONNX export."""

from __future__ import annotations

from typing import Any, Callable, Dict

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # worker threads spinning between calls would steal the other cores' time in the timing
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads == 1 else "1")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x):
        return sess.run(None, {name: x})

    return run


@BACKENDS.register("onnxruntime")
class OnnxRuntimeFP32(Backend):
    name = "onnxruntime"
    description = "onnxruntime CPU, FP32 ONNX"
    install_hint = "pip install onnxruntime onnx"
    imports = ("numpy", "onnxruntime")
    file_kinds = ("onnx",)

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        from ..onnx_files import fp32_onnx

        path = fp32_onnx(ref, ctx)
        return {"path": str(path), "bytes": path.stat().st_size}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        return ort_session(artifact["path"], threads)
