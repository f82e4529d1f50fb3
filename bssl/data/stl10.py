"""STL-10 from the binary release (stl10_binary/{train,test,unlabeled}_X.bin, *_y.bin, class_names.txt).

Images are 96x96, stored per image as three column-major 96x96 planes. The X files are
memory-mapped, so the 100k-image unlabeled split costs no RAM up front. torchvision's STL10
checks MD5 sums of the release archive's files, which rejects any other copy; this parser reads
the same layout. The unlabeled split yields label -1 (for label-free use such as pretraining).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .imagefolder import files_fingerprint, need_file, need_root
from .registry import DATASETS

_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE
DEFAULT_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


class STL10Dataset(Dataset):
    multilabel = False
    difficult = None

    def __init__(self, x_path: Path, labels: np.ndarray, classes, transform=None):
        self.images = np.memmap(x_path, dtype=np.uint8, mode="r").reshape(-1, 3, _SIDE, _SIDE)
        self.labels = labels
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        img = torch.from_numpy(np.ascontiguousarray(self.images[idx].transpose(0, 2, 1)))  # column-major planes
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[idx])


@DATASETS.register("stl10")
def stl10(split: str = "train", root: Optional[str] = None) -> STL10Dataset:
    if split not in ("train", "test", "unlabeled"):
        raise UserError(f"stl10 has splits 'train', 'test' and 'unlabeled', not {split!r}")
    base = need_root("stl10", root)
    folder = base / "stl10_binary" if (base / "stl10_binary").is_dir() else base
    x_path = need_file(folder / f"{split}_X.bin", "stl10")
    size = x_path.stat().st_size
    if size == 0 or size % _IMAGE_BYTES:
        raise UserError(f"{x_path} has {size} bytes, not a whole number of 96x96x3 images ({_IMAGE_BYTES} bytes each)")
    n = size // _IMAGE_BYTES
    names_file = folder / "class_names.txt"
    classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()] if names_file.exists() \
        else list(DEFAULT_CLASSES)
    files = [x_path]
    if split == "unlabeled":
        labels = -np.ones(n, dtype=np.int64)
    else:
        y_path = need_file(folder / f"{split}_y.bin", "stl10")
        labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
        if len(labels) != n:
            raise UserError(f"{y_path} has {len(labels)} labels for {n} images in {x_path.name}")
        bad = (labels < 0) | (labels >= len(classes))
        if bad.any():
            raise UserError(f"{y_path}: label {int(labels[bad][0]) + 1} is out of range 1..{len(classes)}")
        files.append(y_path)
    ds = STL10Dataset(x_path, labels, classes)
    ds.fingerprint = files_fingerprint(files)
    return ds
