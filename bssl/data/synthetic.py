"""Embedded default data that needs no download.

``shapes``: a procedurally generated image dataset made for bssl. Each class is a shape or a
texture (disc, square, triangle, ring, cross, star, stripes, checker, dots, diamond) drawn with a
random colour, scale, position and rotation over a random background (flat colour, gradient or
noise). Every image is generated from ``(seed, split, index)`` alone, so the data is identical
on every machine and any image can be regenerated on its own.

``shapes-multilabel``: 1-3 objects of distinct classes per image, multi-hot targets, and a VOC07
style ``difficult`` flag for objects that are very small.

``digits``: scikit-learn's bundled handwritten digits (real 8x8 scans, 1797 images), upscaled to
RGB ``image_size`` with a fixed stratified train/test split.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

from ..errors import UserError
from .registry import DATASETS, ArrayDataset

SHAPE_CLASSES = (
    "disc", "square", "triangle", "ring", "cross", "star", "stripes", "checker", "dots", "diamond",
)
_SPLIT_OFFSET = {"train": 0, "test": 1_000_003, "val": 2_000_003}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_OFFSET[split], index])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(3)
    base = rng.uniform(0, 1, 3)
    if kind == 0:  # flat
        img = np.broadcast_to(base, (size, size, 3)).copy()
    elif kind == 1:  # linear gradient in a random direction
        other = rng.uniform(0, 1, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = (np.cos(theta) * xx + np.sin(theta) * yy)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = base * (1 - t[..., None]) + other * t[..., None]
    else:  # smooth-ish noise
        img = base + rng.normal(0, 0.12, (size, size, 3))
    return img


def _shape_mask(cls: int, rng: np.random.Generator, size: int, scale: float, cx: float, cy: float) -> np.ndarray:
    """Boolean mask of class `cls`, centred at (cx, cy) in [0,1], radius `scale` (fraction of size)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = xx - cx, yy - cy
    # rotate coordinates
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    r = np.hypot(u, v)
    ang = np.arctan2(v, u)
    name = SHAPE_CLASSES[cls]
    s = scale
    if name == "disc":
        return r <= s
    if name == "square":
        return (np.abs(u) <= s * 0.8) & (np.abs(v) <= s * 0.8)
    if name == "triangle":
        # equilateral triangle via three half-planes
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = 2 * np.pi * k / 3
            inside &= (np.cos(a) * u + np.sin(a) * v) <= s * 0.5
        return inside
    if name == "ring":
        return (r <= s) & (r >= s * 0.55)
    if name == "cross":
        w = s * 0.3
        return ((np.abs(u) <= w) & (np.abs(v) <= s)) | ((np.abs(v) <= w) & (np.abs(u) <= s))
    if name == "star":
        rad = s * (0.55 + 0.45 * np.cos(5 * ang))
        return r <= rad
    if name == "diamond":
        return (np.abs(u) / 0.7 + np.abs(v)) <= s
    region = r <= s * 1.15
    period = max(s / 2.2, 1.5 / size)
    if name == "stripes":
        return region & (np.floor(u / period) % 2 == 0)
    if name == "checker":
        return region & ((np.floor(u / period) + np.floor(v / period)) % 2 == 0)
    if name == "dots":
        fu, fv = (u / period) % 2 - 1, (v / period) % 2 - 1
        return region & (np.hypot(fu, fv) <= 0.6)
    raise AssertionError(name)


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    mean_bg = bg.reshape(-1, 3).mean(0)
    for _ in range(20):
        col = rng.uniform(0, 1, 3)
        if np.abs(col - mean_bg).sum() > 0.6:
            return col
    return 1.0 - mean_bg


def render_shape_image(seed: int, split: str, index: int, size: int, num_classes: int):
    """One single-label image: (uint8 HxWx3, label)."""
    rng = _rng(seed, split, index)
    label = int(rng.integers(num_classes))
    img = _background(rng, size)
    scale = rng.uniform(0.18, 0.38)
    cx, cy = rng.uniform(scale * 0.8, 1 - scale * 0.8, 2)
    mask = _shape_mask(label, rng, size, scale, cx, cy)
    img[mask] = _contrasting_colour(rng, img)
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), label


def render_multilabel_image(seed: int, split: str, index: int, size: int, num_classes: int):
    """Multi-label image: (uint8 HxWx3, multi-hot (C,), difficult (C,))."""
    rng = _rng(seed, split, index)
    n_obj = int(rng.integers(1, 4))
    classes = rng.choice(num_classes, size=n_obj, replace=False)
    img = _background(rng, size)
    target = np.zeros(num_classes, dtype=np.int8)
    difficult = np.zeros(num_classes, dtype=bool)
    for cls in classes:
        scale = rng.uniform(0.08, 0.26)
        cx, cy = rng.uniform(scale, 1 - scale, 2)
        mask = _shape_mask(int(cls), rng, size, scale, cx, cy)
        img[mask] = _contrasting_colour(rng, img)
        target[cls] = 1
        difficult[cls] = scale < 0.1  # tiny objects are "difficult", as VOC marks them
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), target, difficult


def _check_common(split: str, image_size: int, num_classes: int, root: Optional[str]) -> None:
    if root is not None:
        raise UserError("the embedded datasets are generated in memory and take no --data-root; drop it or pick an on-disk dataset")
    if split not in _SPLIT_OFFSET:
        raise UserError(f"unknown split {split!r}; use one of {sorted(_SPLIT_OFFSET)}")
    if not 8 <= image_size <= 512:
        raise UserError(f"image_size {image_size} is out of range for generated data (8..512)")
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise UserError(f"num_classes {num_classes} out of range (2..{len(SHAPE_CLASSES)}) for the shapes dataset")


# Generation costs ~2 ms an image; the pipeline builds the same split in several steps, so keep it.
@lru_cache(maxsize=8)
def _shapes_arrays(split: str, num_samples: int, image_size: int, num_classes: int, seed: int):
    imgs = np.empty((num_samples, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(num_samples, dtype=np.int64)
    for i in range(num_samples):
        imgs[i], labels[i] = render_shape_image(seed, split, i, image_size, num_classes)
    imgs.flags.writeable = False
    labels.flags.writeable = False
    return imgs, labels


@lru_cache(maxsize=8)
def _multilabel_arrays(split: str, num_samples: int, image_size: int, num_classes: int, seed: int):
    imgs = np.empty((num_samples, image_size, image_size, 3), dtype=np.uint8)
    labels = np.zeros((num_samples, num_classes), dtype=np.int8)
    difficult = np.zeros((num_samples, num_classes), dtype=bool)
    for i in range(num_samples):
        imgs[i], labels[i], difficult[i] = render_multilabel_image(seed, split, i, image_size, num_classes)
    for a in (imgs, labels, difficult):
        a.flags.writeable = False
    return imgs, labels, difficult


@DATASETS.register("shapes")
def shapes(split: str = "train", root: Optional[str] = None, num_samples: int = 2000, image_size: int = 32,
           num_classes: int = 10, seed: int = 0) -> ArrayDataset:
    _check_common(split, image_size, num_classes, root)
    imgs, labels = _shapes_arrays(split, int(num_samples), int(image_size), int(num_classes), int(seed))
    return ArrayDataset(imgs, labels, SHAPE_CLASSES[:num_classes], name="shapes")


@DATASETS.register("shapes-multilabel")
def shapes_multilabel(split: str = "train", root: Optional[str] = None, num_samples: int = 2000, image_size: int = 32,
                      num_classes: int = 10, seed: int = 0) -> ArrayDataset:
    _check_common(split, image_size, num_classes, root)
    imgs, labels, difficult = _multilabel_arrays(split, int(num_samples), int(image_size), int(num_classes), int(seed))
    return ArrayDataset(imgs, labels, SHAPE_CLASSES[:num_classes], multilabel=True, difficult=difficult,
                        name="shapes-multilabel")


@DATASETS.register("digits")
def digits(split: str = "train", root: Optional[str] = None, image_size: int = 32, test_fraction: float = 0.25,
           seed: int = 0, num_samples: Optional[int] = None, num_classes: int = 10) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits, upscaled (bilinear) to RGB image_size."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if root is not None:
        raise UserError("the digits dataset ships with scikit-learn and takes no --data-root")
    if split not in ("train", "test"):
        raise UserError(f"digits has splits 'train' and 'test', not {split!r}")
    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
    idx = idx_train if split == "train" else idx_test
    if num_samples is not None:
        idx = idx[:num_samples]
    t = torch.from_numpy(x[idx])[:, None]
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    imgs = (t.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return ArrayDataset(np.ascontiguousarray(imgs), y[idx], [str(d) for d in range(10)], name="digits")
