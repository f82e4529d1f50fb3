"""Feature extraction from bssl checkpoints, plain modules, exported ONNX models or model.bssl files
(the native runtime), cached on disk.

An extractor maps a float batch (N, 3, S, S), already normalised with ImageNet mean/std, to
(N, D) features. Cached features live in ``<cache_dir>/<key>/`` where the key hashes the
extractor's content (checkpoint bytes or weights), the dataset identity and the preprocessing,
so a changed checkpoint or dataset never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from ..utils import hash_tensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_FORMAT = 1  # bump when the cached layout or preprocessing semantics change


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_module(module: nn.Module) -> str:
    return hash_tensors(module.state_dict().items(), hashlib.sha256(type(module).__qualname__.encode())).hexdigest()


class _FeaturesOf(nn.Module):
    """Wrap a model with a `.features(x)` method as a module whose forward is that method."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


class FeatureExtractor:
    """Base class: `name`, `key` (content hash), `input_size`, `__call__(x) -> np.ndarray (N, D)`.

    `module` is the trainable torch module behind it (None for ONNX), used by fine-tuning protocols.
    """

    name: str = "extractor"
    key: str = ""
    input_size: int = 224
    module: Optional[nn.Module] = None

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} does not implement __call__")


class TorchExtractor(FeatureExtractor):
    def __init__(self, module: nn.Module, input_size: int, key: Optional[str] = None, name: str = "module",
                 device: str | torch.device = "cpu"):
        if hasattr(module, "features") and callable(getattr(module, "features")) and not isinstance(
                getattr(module, "features"), nn.Sequential):
            module = _FeaturesOf(module)
        self.module = module
        self.input_size = int(input_size)
        self.key = key or _sha256_module(module)
        self.name = name
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        was_training = self.module.training
        self.module.eval().to(self.device)
        out = self.module(x.to(self.device))
        self.module.train(was_training)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(out.shape[0], -1).float().cpu().numpy()


class OnnxExtractor(FeatureExtractor):
    """Runs an exported model in onnxruntime; takes the output named "features" if there is one."""

    OUTPUT_NAME = "features"

    def __init__(self, path: os.PathLike | str, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model {path} does not exist; pass the .onnx file written by `bssl export`")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            msg = str(exc).splitlines()[0][:160]
            hint = ("; the packed export (ai.bssl ops) runs through TVM only, evaluate the standard .onnx export"
                    if "ai.bssl" in str(exc) else "")
            raise UserError(f"onnxruntime cannot load {path}: {msg}{hint}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = self.OUTPUT_NAME if self.OUTPUT_NAME in outputs else outputs[0]
        shape = inp.shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_size = shape[-1] if isinstance(shape[-1], int) and shape[-1] > 0 else 224
        self.key = _sha256_file(path)
        self.name = path.stem

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        arr = x.detach().cpu().numpy().astype(np.float32)
        if self.fixed_batch is None:
            chunks = [arr]
        else:
            b = self.fixed_batch
            chunks = [arr[i:i + b] for i in range(0, len(arr), b)]
        outs = []
        for c in chunks:
            n = len(c)
            if self.fixed_batch is not None and n < self.fixed_batch:  # pad a short last batch
                c = np.concatenate([c, np.repeat(c[-1:], self.fixed_batch - n, axis=0)])
            out = self.session.run([self.output_name], {self.input_name: c})[0]
            outs.append(out[:n].reshape(n, -1))
        return np.concatenate(outs).astype(np.float32)


class RuntimeExtractor(FeatureExtractor):
    """Runs a model.bssl file in the native runtime (bssl.runtime) and takes its features value
    (the global-pooled activations, `student.features(x)`), so evaluation measures the deployed
    file itself: folded units, fused epilogues, float16 parameters where the file has them."""

    def __init__(self, path: os.PathLike | str, threads: Optional[int] = None):
        from .. import runtime

        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file {path} does not exist; pass the model.bssl written by `bssl export --format bssl`")
        if not runtime.available():
            raise UserError("evaluating a .bssl file needs the native runtime library; build it with `pip install -e .`")
        if threads is None:  # results are identical for any thread count
            threads = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
        self.model = runtime.load(path, threads=threads)
        c, h, w = self.model.input_shape
        if h != w:
            raise UserError(f"{path} takes {h}x{w} inputs; evaluation feeds square images")
        self.input_size = int(h)
        self.key = _sha256_file(path)
        self.name = path.parent.name if path.stem == "model" else path.stem

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        return self.model.run(arr)[1]


def _input_size_from_config(ckpt: Dict[str, Any], default: int = 224) -> int:
    spec = ckpt.get("spec") or {}
    if isinstance(spec, dict) and spec.get("input_size"):
        return int(spec["input_size"])
    cfg = ckpt.get("config") or {}
    size = (cfg.get("data") or {}).get("image_size") if isinstance(cfg, dict) else None
    return int(size) if size else default


def load_feature_extractor(path: os.PathLike | str, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Extractor for a student or teacher checkpoint (dispatch on its bssl kind), an `.onnx` model or
    a `.bssl` file (native runtime).

    Non-bssl files (official MoCo/SimSiam .pth.tar, torchvision state dicts) go to
    `bssl.teachers.load_teacher`, which knows those formats.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxExtractor(path)
    if path.suffix.lower() == ".bssl":
        return RuntimeExtractor(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a student/teacher .pt, an exported .onnx or a model.bssl")
    key = _sha256_file(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (let load_teacher report on formats it knows)
        raw = None
    kind = raw.get("bssl_kind") if isinstance(raw, dict) else None
    if kind in ("student", "classifier"):  # a classifier: the features of its student
        from ..classifier import load_classifier
        from ..models import load_student

        model = load_student(path) if kind == "student" else load_classifier(path)
        return TorchExtractor(model, _input_size_from_config(raw), key=key, name=path.stem, device=device)
    if kind is not None and kind != "teacher":
        raise UserError(f"checkpoint {path} holds a {kind!r}; evaluation needs a student or teacher checkpoint, an .onnx or a model.bssl")
    from ..teachers import load_teacher

    backbone, info = load_teacher(path)
    info = info or {}
    fallback = 32 if info.get("small_stem") else 224  # small-stem backbones are the CIFAR-sized variant
    size = info.get("input_size") or info.get("image_size") or (
        _input_size_from_config(raw, fallback) if isinstance(raw, dict) else fallback)
    size = int(size)
    return TorchExtractor(backbone, size, key=key, name=path.stem, device=device)


def as_extractor(obj: Any, input_size: Optional[int] = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Accept an extractor, a path, or any nn.Module (with `.features` or returning features)."""
    if isinstance(obj, FeatureExtractor):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_feature_extractor(obj, device=device)
    if isinstance(obj, nn.Module):
        size = input_size or getattr(obj, "spec", {}).get("input_size") or 224
        return TorchExtractor(obj, int(size), device=device)
    raise UserError(f"cannot evaluate a {type(obj).__name__}; pass a checkpoint path, an .onnx or .bssl path or an nn.Module")


def eval_transform(input_size: int, crop_pct: Optional[float] = None) -> Callable:
    """uint8 image -> resized, centre-cropped, ImageNet-normalised float tensor.

    crop_pct defaults to 0.875 (resize 256, crop 224) for ImageNet-sized inputs and to 1.0
    (plain resize) for small inputs such as 32 px, where a crop would cut the object.
    """
    from torchvision.transforms import v2

    if crop_pct is None:
        crop_pct = 0.875 if input_size >= 128 else 1.0
    resize = int(round(input_size / crop_pct))
    return v2.Compose([
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(input_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@dataclass
class Features:
    """Extracted features of one dataset split."""

    features: np.ndarray          # (N, D) float32 (may be a read-only memmap)
    targets: np.ndarray           # (N,) int64 or (N, C) float32 multi-hot
    classes: list
    multilabel: bool
    difficult: Optional[np.ndarray] = None   # (N, C) bool for VOC-style data
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_finite(feats: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(np.asarray(feats, dtype=np.float32))
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise UserError(f"features of {what} contain NaN/inf in {len(rows)} of {len(feats)} samples "
                        f"(first row {int(rows[0])}); the checkpoint or exported model is broken, re-export or retrain it")


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, dataset, batch_size: int = 128, workers: int = 0,
                     desc: str = "features") -> tuple:
    """Run the extractor over a dataset (whose transform is already set). Returns (feats, targets)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    feats, targets = [], []
    for x, y in tqdm(loader, desc=desc, disable=None, leave=False):
        feats.append(np.asarray(extractor(x), dtype=np.float32))
        targets.append(y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y))
    if not feats:
        raise UserError(f"{desc}: the dataset is empty; check the dataset folder and split")
    feats = np.concatenate(feats)
    targets = np.concatenate(targets)
    targets = targets.astype(np.float32) if targets.ndim == 2 else targets.astype(np.int64)
    return feats, targets


def _validate_targets(targets: np.ndarray, num_classes: int, multilabel: bool, what: str) -> None:
    if multilabel:
        if targets.ndim != 2 or targets.shape[1] != num_classes:
            raise UserError(f"{what}: multi-label targets have shape {targets.shape}, expected (N, {num_classes})")
        if not np.isin(targets, (0.0, 1.0)).all():
            raise UserError(f"{what}: multi-hot targets must be 0 or 1")
        return
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        bad = targets[(targets < 0) | (targets >= num_classes)][0]
        raise UserError(f"{what}: label {int(bad)} is out of range 0..{num_classes - 1}; "
                        f"the labels do not match the dataset's {num_classes} classes")


def cached_features(extractor: FeatureExtractor, dataset, identity: Dict[str, Any], cache_dir: Optional[Path],
                    batch_size: int = 128, workers: int = 0, crop_pct: Optional[float] = None) -> Features:
    """Features of `dataset` through `extractor`, from the cache when the content key matches.

    `identity` names the data (dataset name, split, root, options); the dataset's own
    `fingerprint` (file names and sizes of on-disk data) is added when it has one.
    """
    what = f"{identity.get('dataset', 'dataset')}/{identity.get('split', '?')}"
    ident = dict(identity, n=len(dataset), fingerprint=getattr(dataset, "fingerprint", None))
    key_src = json.dumps({"format": CACHE_FORMAT, "extractor": extractor.key, "input_size": extractor.input_size,
                          "crop_pct": crop_pct, "data": ident}, sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    multilabel = bool(getattr(dataset, "multilabel", False))
    classes = list(getattr(dataset, "classes", []))
    if cache_dir is not None:
        folder = Path(cache_dir) / key
        if (folder / "meta.json").exists():
            feats = np.load(folder / "features.npy", mmap_mode="r")
            targets = np.load(folder / "targets.npy")
            diff = np.load(folder / "difficult.npy") if (folder / "difficult.npy").exists() else None
            meta = json.loads((folder / "meta.json").read_text())
            return Features(feats, targets, meta["classes"], meta["multilabel"], diff, dict(meta, cached=True))
    dataset.transform = eval_transform(extractor.input_size, crop_pct)
    feats, targets = extract_features(extractor, dataset, batch_size, workers, desc=f"features {what}")
    check_finite(feats, what)
    _validate_targets(targets, len(classes), multilabel, what)
    difficult = getattr(dataset, "difficult", None)
    difficult = None if difficult is None else np.asarray(difficult, dtype=bool)
    meta = {"key": key, "identity": ident, "extractor": extractor.name, "classes": classes, "multilabel": multilabel,
            "shape": list(feats.shape)}
    if cache_dir is not None:
        _write_cache(Path(cache_dir) / key, feats, targets, difficult, meta)
    return Features(feats, targets, classes, multilabel, difficult, dict(meta, cached=False))


def _write_cache(folder: Path, feats, targets, difficult, meta) -> None:
    """Write into a temp folder, then rename it into place, so a cache entry is whole or absent."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "features.npy", feats)
        np.save(tmp / "targets.npy", targets)
        if difficult is not None:
            np.save(tmp / "difficult.npy", difficult)
        (tmp / "meta.json").write_text(json.dumps(meta, default=str))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process filled the same key first; theirs is identical
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
