from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import Registry

# name -> factory(split: str, root: Optional[str], **options) -> Dataset
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")


def build_dataset(name: str, split: str = "train", root: Optional[str] = None, transform=None, **options: Any) -> Dataset:
    """Build a registered dataset. Unknown options for a dataset are a user error."""
    factory = DATASETS.get(name)
    ds = factory(split=split, root=root, **options)
    ds.transform = transform
    return ds


def dataset_names():
    return DATASETS.names()


class ArrayDataset(Dataset):
    """In-memory images (N, H, W, 3) uint8 with int labels or (N, C) multi-hot targets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes, multilabel: bool = False,
                 difficult: Optional[np.ndarray] = None, transform=None, name: str = ""):
        assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.multilabel = multilabel
        self.difficult = difficult
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        img = torch.from_numpy(np.array(self.images[idx])).permute(2, 0, 1)  # copy: the cached arrays are read-only
        if self.transform is not None:
            img = self.transform(img)
        if self.multilabel:
            target = torch.from_numpy(self.labels[idx].astype(np.float32))
        else:
            target = int(self.labels[idx])
        return img, target


_EMBEDDED_SIZE_KEYS = {"train": "num_train", "test": "num_test", "val": "num_test"}


def dataset_from_config(cfg: dict, split: str = "train", transform=None, name: Optional[str] = None) -> Dataset:
    """Build the dataset described by the preset's [data] section (or `name` with the same options).

    Embedded datasets (generated or bundled) take their size from data.num_train / data.num_test and
    are generated from run.seed; on-disk datasets take data.root.
    """
    data = cfg.get("data", {})
    name = name or data.get("dataset", "shapes")
    root = data.get("root")
    if name in ("shapes", "shapes-multilabel"):
        opts = {"num_samples": int(data.get(_EMBEDDED_SIZE_KEYS.get(split, "num_train"), 1000)),
                "image_size": int(data.get("image_size", 32)), "num_classes": int(data.get("num_classes", 10)),
                "seed": int(cfg.get("run", {}).get("seed", 0))}
        return build_dataset(name, split=split, root=None, transform=transform, **opts)
    if name == "digits":
        return build_dataset(name, split="train" if split == "train" else "test", root=None, transform=transform,
                             image_size=int(data.get("image_size", 32)))
    return build_dataset(name, split=split, root=root, transform=transform)
