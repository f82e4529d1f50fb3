"""ImageFolder trees: root/train/<class>/<image>, held-out images in root/val/ or root/test/.

Covers ImageNet (with val/ sorted into class folders), ImageNet-100, Imagenette and CIFAR-10 as
JPEG files. Images decode to uint8 (3, H, W) RGB tensors (`read_rgb`). The small file helpers at
the top (decoding, root checks, fingerprints) are shared with cifar.py, stl10.py, voc.py.

Held-out data (split ``"heldout"``): ``val/`` if the root has it, else ``test/``, else a seeded,
stratified share of ``train/`` (``holdout_fraction`` of each class, chosen by a hash of
``seed`` and the file's path); with that automatic split, ``"train"`` is train/ minus those files.

The whole tree is checked when a split is built, so a bad folder is reported before training:
a missing train/, a single class, an empty class folder, class folders that differ between
train/ and the held-out folder, non-image files in class folders (hidden files such as .DS_Store
are skipped), images outside class folders. Each is one `UserError` line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .registry import DATASETS, HELDOUT, check_holdout_fraction

# Folders searched, in this order, for held-out images.
HELDOUT_FOLDERS = ("val", "test")


def read_rgb(path: str) -> torch.Tensor:
    """Decode an image file to a uint8 (3, H, W) RGB tensor with Pillow (JPEG, PNG, BMP, TIFF, WebP, ...).

    The EXIF orientation is applied. Grayscale (L, 16-bit I;16) is repeated over three channels,
    CMYK is converted by Pillow. Images with transparency (RGBA, LA, PA, palette or grayscale with a
    transparent colour) are alpha-composited over white, so hidden colours under transparent
    pixels never reach the model.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            if "exif" in img.info:  # only camera files carry an orientation; skip the parse for the rest
                img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte
                img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            arr = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # Pillow's decode failures
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


@lru_cache(maxsize=1)
def _image_suffixes() -> Tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def is_image_file(name: str) -> bool:
    """An image by its suffix (torchvision's ImageFolder list, any case: .jpg, .JPEG, .png, ...)."""
    return name.lower().endswith(_image_suffixes())


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _names(items, limit: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _subfolders(path: Path) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not _hidden(e.name))


def relative_paths(folder: Path, paths: Iterable[str]) -> List[str]:
    """Paths below `folder` (as scanned from it) relative to it, with "/"; string slicing, since
    pathlib's relative_to costs seconds on 50k files."""
    cut = len(os.path.join(str(folder), ""))
    return [p[cut:].replace(os.sep, "/") for p in paths]


@dataclass
class FolderScan:
    """The class folders of one split folder and their image files (sorted, as torchvision's ImageFolder)."""

    folder: Path
    classes: List[str]
    samples: List[Tuple[str, int]]

    @property
    def paths(self) -> List[str]:
        return [p for p, _ in self.samples]


def scan_split(name: str, folder: Path) -> FolderScan:
    """List folder/<class>/**/<image>; every layout mistake is a UserError naming the folder or file."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not _hidden(e.name)]
    loose = [e.name for e in entries if e.is_file() and not _hidden(e.name) and is_image_file(e.name)]
    if loose and not classes:
        raise UserError(f"{name}: {folder} holds images directly ({loose[0]}, ...); sort them into one folder per "
                        f"class ({folder}/<class>/...), e.g. ImageNet's val with its ground-truth labels")
    if loose:
        raise UserError(f"{name}: {folder} holds {len(loose)} image(s) outside the class folders (e.g. {loose[0]}); "
                        f"move them into {folder}/<class>/ or out of the dataset")
    if not classes:
        raise UserError(f"{name}: {folder} has no class folders; expected {folder}/<class>/<image>.jpg")
    samples, not_images, empty = [], [], []
    for idx, cls in enumerate(classes):
        count, walked = 0, []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = [d for d in dirnames if not _hidden(d)]  # prunes the walk: needs the live generator
            walked.append((dirpath, filenames))
        for dirpath, filenames in sorted(walked):
            for fname in sorted(filenames):
                if _hidden(fname):
                    continue
                path = os.path.join(dirpath, fname)
                if is_image_file(fname):
                    samples.append((path, idx))
                    count += 1
                else:
                    not_images.append(path)
        if count == 0:
            empty.append(cls)
    if not_images:
        raise UserError(f"{name}: {len(not_images)} file(s) in the class folders of {folder} are not images (e.g. "
                        f"{Path(not_images[0]).relative_to(folder)}); remove or move them (images are .jpg, .jpeg, "
                        f".png, .bmp, .ppm, .pgm, .tif, .tiff, .webp)")
    if empty:
        raise UserError(f"{name}: class folder {folder / empty[0]} holds no images"
                        f"{' (also empty: ' + _names(empty[1:]) + ')' if len(empty) > 1 else ''}; "
                        f"add its images or remove the folder")
    if len(classes) < 2:
        raise UserError(f"{name}: {folder} has a single class folder ({classes[0]}); the evaluation needs at least "
                        f"two classes, one folder each: {folder}/<class>/<image>")
    return FolderScan(folder, classes, samples)


def tree_root(name: str, root: Optional[str]) -> Path:
    """The dataset folder, which must hold train/."""
    base = need_root(name, root)
    if not (base / "train").is_dir():
        present = _subfolders(base)
        raise UserError(f"{name}: {base} has no train/ folder (found: {', '.join(present) or 'no folders'}); expected "
                        f"{base}/train/<class>/<image> and, for held-out images, {base}/val/<class>/<image>")
    return base


def heldout_folder(base: Path) -> Optional[str]:
    """The folder of held-out images under base (val/, else test/), None for a seeded split of train/."""
    for sub in HELDOUT_FOLDERS:
        if (base / sub).is_dir():
            return sub
    return None


def seeded_holdout(scan: FolderScan, fraction: float, seed: int) -> np.ndarray:
    """Mask of train/ files held out: round(fraction * n) of each class (at least 1, at most n - 1).

    Files are ranked by a hash of (seed, path inside the folder), so the choice depends only on the
    seed and the file names, not on the order of listing, and adding images moves few others.
    """
    fraction = check_holdout_fraction(fraction)
    keys = [hashlib.blake2b(f"{seed}\0{rel}".encode(), digest_size=8).digest()
            for rel in relative_paths(scan.folder, scan.paths)]
    labels = np.array([c for _, c in scan.samples], dtype=np.int64)
    held = np.zeros(len(labels), dtype=bool)
    for c in range(len(scan.classes)):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        k = min(n - 1, max(1, int(round(fraction * n))))
        if k > 0:
            order = sorted(idx, key=lambda i: keys[i])
            held[order[:k]] = True
    if not held.any():
        raise UserError(f"{scan.folder} has one image per class, too few to hold any out; add images or a "
                        f"{scan.folder.parent}/val/<class>/ folder of held-out images")
    return held


class ImageFolderDataset(Dataset):
    """Images of a scanned split folder; `samples` are (path, class index), `targets` the class indices."""

    multilabel = False
    difficult = None

    def __init__(self, folder: Path, classes: List[str], samples: List[Tuple[str, int]], transform=None):
        self.folder = Path(folder)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.samples = list(samples)
        self.targets = [c for _, c in self.samples]
        self.paths = [p for p, _ in self.samples]
        self.transform = transform
        self.fingerprint = fingerprint(relative_paths(self.folder, self.paths))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        path, label = self.samples[idx]
        img = read_rgb(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(label)


def _check_same_classes(name: str, a: FolderScan, b: FolderScan) -> None:
    if a.classes == b.classes:
        return
    only_a = [c for c in a.classes if c not in set(b.classes)]
    only_b = [c for c in b.classes if c not in set(a.classes)]
    parts = []
    if only_a:
        parts.append(f"missing in {b.folder.name}/: {_names(only_a)}")
    if only_b:
        parts.append(f"missing in {a.folder.name}/: {_names(only_b)}")
    raise UserError(f"{name}: the class folders of {a.folder} and {b.folder} differ ({'; '.join(parts)}); "
                    f"both splits need the same class folders")


def open_image_folder(name: str, split: str, root: Optional[str], holdout_fraction: float = 0.1, seed: int = 0,
                      num_classes: Optional[int] = None) -> ImageFolderDataset:
    """Split `split` of an ImageFolder tree, after checking the whole tree (train/ and its held-out folder).

    `split`: "train", "heldout" (val/, else test/, else the seeded split of train/) or the name of
    a split folder. `num_classes`, when given, is the class count the dataset must have.
    """
    base = tree_root(name, root)
    holdout_fraction = check_holdout_fraction(holdout_fraction)
    held_name = heldout_folder(base)
    if split == HELDOUT:
        split = held_name or HELDOUT
    elif split != "train" and not (base / split).is_dir():
        where = f"{held_name}/" if held_name else f"a seeded {holdout_fraction:g} of train/"
        raise UserError(f"{name}: {base} has no {split}/ folder (its splits: {', '.join(_subfolders(base))}); ask for "
                        f"'train' or '{HELDOUT}' (here: {where})")
    train = scan_split(name, base / "train")
    if num_classes is not None and len(train.classes) != num_classes:
        raise UserError(f"{name}: {base / 'train'} has {len(train.classes)} class folders ({_names(train.classes)}), "
                        f"{name} has {num_classes}; is --data-root the right folder?")
    other = None
    if held_name is not None:
        other = scan_split(name, base / held_name)
        _check_same_classes(name, train, other)
    if split not in ("train", HELDOUT, held_name):
        extra = scan_split(name, base / split)
        _check_same_classes(name, train, extra)
        return ImageFolderDataset(extra.folder, extra.classes, extra.samples)
    if split == held_name:
        return ImageFolderDataset(other.folder, other.classes, other.samples)
    if held_name is not None:  # split == "train" beside a held-out folder
        return ImageFolderDataset(train.folder, train.classes, train.samples)
    held = seeded_holdout(train, holdout_fraction, seed)
    keep = held if split == HELDOUT else ~held
    return ImageFolderDataset(train.folder, train.classes, [s for s, k in zip(train.samples, keep) if k])


@DATASETS.register("imagefolder")
def imagefolder(split: str = "train", root: Optional[str] = None, holdout_fraction: float = 0.1,
                seed: int = 0) -> ImageFolderDataset:
    return open_image_folder("imagefolder", split, root, holdout_fraction, seed)
