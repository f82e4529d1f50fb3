"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches; CIFAR-10 also as JPEG folders.

cifar10 reads whichever layout --data-root holds (`cifar10_layout`): the pickle batches
(cifar-10-batches-py/, or that folder itself), or an ImageFolder tree of image files
(train/<class>/, held-out images in val/<class>/ or test/<class>/, see imagefolder.py).

torchvision's CIFAR classes verify MD5 sums of the release files, so any other copy (or a test
fixture) is rejected; this parser reads the same format without that check and refuses pickles
that hold anything other than plain data (a restricted unpickler: no code runs on load).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from .imagefolder import files_fingerprint, need_file, need_root, open_image_folder
from .registry import DATASETS, HELDOUT, ArrayDataset

_SAFE = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _DataOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a CIFAR python batch ({exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _folder(root: Optional[str], name: str, sub: str) -> Path:
    base = need_root(name, root)
    if (base / sub).is_dir():
        return base / sub
    if base.name == sub or (base / "batches.meta").exists() or (base / "meta").exists():
        return base
    raise UserError(f"{name}: {base} has no {sub}/ folder; extract the python version of {name} "
                    f"(the folder {sub}/ with its batch files) there")


def _read_batches(folder: Path, files, label_key: str, name: str):
    images, labels = [], []
    for fname in files:
        path = need_file(folder / fname, name)
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise UserError(f"{path} lacks the 'data' or '{label_key}' entry of a {name} batch")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"{path}: 'data' has shape {data.shape}, a {name} batch has (N, 3072) uint8 rows")
        lab = np.asarray(batch[label_key], dtype=np.int64)
        if len(lab) != len(data):
            raise UserError(f"{path}: {len(lab)} labels for {len(data)} images")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _check_labels(labels: np.ndarray, classes, where: Path) -> None:
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise UserError(f"{where}: label {int(labels[bad][0])} is out of range 0..{len(classes) - 1} "
                        f"for {len(classes)} classes")


def _decode_names(names) -> list:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar10_layout(root: Optional[str]) -> str:
    """"pickles" (the python batches) or "folders" (train/<class>/ image files) under root; else a UserError."""
    base = need_root("cifar10", root)
    if (base / "cifar-10-batches-py").is_dir() or (base / "batches.meta").exists():
        return "pickles"
    if (base / "train").is_dir():
        return "folders"
    present = sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
    raise UserError(f"cifar10: {base} holds neither the python batches (cifar-10-batches-py/) nor image folders "
                    f"(train/<class>/*.jpg) (found: {', '.join(present[:8]) or 'nothing'}); extract the python "
                    f"version of CIFAR-10 there, or point --data-root at the folder holding train/")


@DATASETS.register("cifar10")
def cifar10(split: str = "train", root: Optional[str] = None, holdout_fraction: float = 0.1, seed: int = 0):
    if cifar10_layout(root) == "folders":
        ds = open_image_folder("cifar10", split, root, holdout_fraction, seed, num_classes=10)
        ds.name = "cifar10"
        return ds
    if split not in ("train", "test"):
        raise UserError(f"cifar10 has splits 'train' and 'test' (held out: '{HELDOUT}'), not {split!r}")
    folder = _folder(root, "cifar10", "cifar-10-batches-py")
    meta = _load_pickle(need_file(folder / "batches.meta", "cifar10"))
    classes = _decode_names(meta.get("label_names", []))
    if not classes:
        raise UserError(f"{folder / 'batches.meta'} has no 'label_names'")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = _read_batches(folder, files, "labels", "cifar10")
    _check_labels(labels, classes, folder)
    ds = ArrayDataset(images, labels, classes, name="cifar10")
    ds.fingerprint = files_fingerprint([folder / f for f in files])
    return ds


@DATASETS.register("cifar100")
def cifar100(split: str = "train", root: Optional[str] = None, label_type: str = "fine") -> ArrayDataset:
    if split not in ("train", "test"):
        raise UserError(f"cifar100 has splits 'train' and 'test', not {split!r}")
    if label_type not in ("fine", "coarse"):
        raise UserError(f"cifar100 label_type must be 'fine' (100 classes) or 'coarse' (20), not {label_type!r}")
    folder = _folder(root, "cifar100", "cifar-100-python")
    meta = _load_pickle(need_file(folder / "meta", "cifar100"))
    classes = _decode_names(meta.get(f"{label_type}_label_names", []))
    if not classes:
        raise UserError(f"{folder / 'meta'} has no '{label_type}_label_names'")
    images, labels = _read_batches(folder, [split], f"{label_type}_labels", "cifar100")
    _check_labels(labels, classes, folder / split)
    ds = ArrayDataset(images, labels, classes, name="cifar100")
    ds.fingerprint = files_fingerprint([folder / split])
    return ds
