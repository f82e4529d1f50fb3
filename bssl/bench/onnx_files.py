"""ONNX files for the onnxruntime backends: the FP32 export and its int8 QDQ quantisation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..utils import atomic_path
from .models import ModelRef

INPUT_NAME = "input"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def fp32_onnx(ref: ModelRef, ctx) -> Path:
    """The FP32 ONNX file of a reference: the file itself for ONNX exports, else exported here."""
    if ref.kind == "onnx":
        return Path(ref.path)
    return ctx.cached(("onnx-fp32", ref.text), lambda: _export(ref, ctx))


def _export(ref: ModelRef, ctx) -> Path:
    path = ctx.artifact_path(ref, ".onnx")
    if path.exists():
        return path
    model = ctx.torch_model(ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _is_student(model):
        # students go through bssl.export (folded graph, standard ops) so the file is the one users deploy
        from ..export import export_model

        res = export_model(model, "onnx", path.with_suffix(".onnx-export"), check_samples=0,
                           input_size=ctx.input_size, seed=ctx.seed)
        return Path(res["path"])
    import torch

    x = torch.zeros(1, 3, ctx.input_size, ctx.input_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=[INPUT_NAME], output_names=["output"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "output": {0: "batch"}}, opset_version=17)
    return path


def _is_student(model) -> bool:
    return hasattr(model, "spec") and hasattr(model, "features")


def calibration_batches(input_size: int, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Images of the embedded `shapes` data, resized and ImageNet-normalised, one per batch."""
    import torch.nn.functional as F

    from ..data import build_dataset

    ds = build_dataset("shapes", split="train", num_samples=count, image_size=input_size, seed=seed)
    for i in range(len(ds)):
        img, _ = ds[i]
        x = img.float().div(255.0)
        if x.shape[-1] != input_size:
            x = F.interpolate(x[None], size=(input_size, input_size), mode="bilinear", align_corners=False)[0]
        yield ((x.numpy() - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)[None]


def int8_onnx(ref: ModelRef, ctx) -> Path:
    """Static QDQ int8 quantisation of the FP32 ONNX file, calibrated on embedded data."""
    src = fp32_onnx(ref, ctx)
    path = ctx.artifact_path(ref, ".int8.onnx")
    if path.exists():
        return path
    return quantize_int8(src, path, calibration_batches(ctx.input_size, ctx.calibration_images, ctx.seed))


def quantize_int8(src: Path, path: Path, batches: Iterable[np.ndarray]) -> Path:
    """onnxruntime's static QDQ quantisation (per-channel int8 weights, uint8 activations) of `src`, calibrated on
    `batches` (normalised float32 NCHW arrays); written atomically to `path`. The int8 build a user would ship."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnxruntime as ort

    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pre = path.with_name(path.name + ".pre.onnx")
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src), str(pre))
                model_in = pre
            except Exception:  # pre-processing is an optimisation; quantise the raw file if it fails
                model_in = src
            quantize_static(str(model_in), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        if pre.exists():
            pre.unlink()
    return path
