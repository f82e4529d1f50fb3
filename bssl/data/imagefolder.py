"""ImageFolder trees: root/train/<class>/<image> and root/val/<class>/<image>.

Covers ImageNet (with val/ sorted into class folders), ImageNet-100 and Imagenette layouts.
Parsing is torchvision's ImageFolder; images decode to uint8 (3, H, W) tensors. The small file
helpers at the top (decoding, root checks, fingerprints) are shared with cifar.py, stl10.py, voc.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .registry import DATASETS


def read_rgb(path: str) -> torch.Tensor:
    """Decode an image file to a uint8 (3, H, W) RGB tensor with Pillow (JPEG, PNG, BMP, TIFF, WebP, ...)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise UserError(f"image {path} cannot be decoded ({exc}); remove or replace the file") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def need_root(name: str, root: Optional[str]) -> Path:
    if root is None or str(root) == "":
        raise UserError(f"dataset {name} is read from disk; pass its folder with --data-root DIR")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset {name}: folder {path} does not exist; point --data-root at the dataset folder")
    return path


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what}: file {path} is missing; is --data-root the right folder?")
    return path


def fingerprint(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def files_fingerprint(paths: Iterable[Path]) -> str:
    """Names, sizes and modification times: changes when a file is replaced, without reading it."""
    out = []
    for p in paths:
        st = p.stat()
        out.append(f"{p.name}:{st.st_size}:{int(st.st_mtime)}")
    return fingerprint(out)


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".JPEG"}


class ImageFolderDataset(Dataset):
    multilabel = False
    difficult = None

    def __init__(self, folder: Path, transform=None):
        from torchvision.datasets import ImageFolder

        try:
            self.inner = ImageFolder(str(folder), loader=read_rgb)
        except FileNotFoundError as exc:
            raise UserError(f"imagefolder: {folder} has no usable class folders ({exc}); expected "
                            f"{folder}/<class>/<image>.jpg") from None
        self.classes = list(self.inner.classes)
        self.num_classes = len(self.classes)
        self.targets = list(self.inner.targets)
        self.transform = transform
        self.fingerprint = fingerprint(str(Path(p).relative_to(folder)) for p, _ in self.inner.samples)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, idx: int):
        path, label = self.inner.samples[idx]
        img = read_rgb(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(label)


@DATASETS.register("imagefolder")
def imagefolder(split: str = "train", root: Optional[str] = None) -> ImageFolderDataset:
    base = need_root("imagefolder", root)
    folder = base / split
    if not folder.is_dir():
        present = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise UserError(f"imagefolder: split folder {folder} is missing (found: {', '.join(present) or 'no folders'}); "
                        f"expected {base}/train/<class>/... and {base}/val/<class>/...")
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix in _IMAGE_SUFFIXES]
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if loose and not subdirs:
        raise UserError(f"imagefolder: {folder} holds images directly ({loose[0].name}, ...); sort them into one "
                        f"folder per class ({folder}/<class>/...), e.g. ImageNet's val with its ground-truth labels")
    return ImageFolderDataset(folder)


imagefolder.eval_splits = ("train", "val")
