from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DATA
from ..errors import UserError
from ..registry import Registry

# name -> factory(split: str, root: Optional[str], **options) -> Dataset
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")

# The split name that means "the held-out images of this dataset", whatever the dataset calls them.
HELDOUT = "heldout"
DEFAULT_HOLDOUT_FRACTION = DATA["holdout_fraction"].default

# Datasets whose held-out split is fixed by their release.
_FIXED_HELDOUT = {"shapes": "test", "shapes-multilabel": "test", "digits": "test", "cifar100": "test",
                  "stl10": "test", "voc2007": "test"}


def check_holdout_fraction(value: Any) -> float:
    """data.holdout_fraction as a float in (0, 0.5]; anything else is a UserError."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if isinstance(value, bool) or not 0.0 < fraction <= 0.5:
        raise UserError(f"data.holdout_fraction = {value!r} is not a fraction in (0, 0.5]; it is the share of each "
                        f"class of train/ held out when the folder has no val/ or test/ (default 0.1)")
    return fraction


def heldout_split(name: str, root: Optional[str] = None, holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
                  seed: int = 0) -> Dict[str, Any]:
    """Where the held-out images of dataset `name` come from: the one place that decides it.

    Returns ``{"split": factory split, "source": "split" | "folder" | "seeded", "description": str}``
    plus ``fraction`` and ``seed`` for a seeded split. shapes, digits, CIFAR, STL-10 and VOC2007
    use their test split; ImageFolder trees (``imagefolder``, ``cifar10`` as JPEG folders) use
    ``val/``, else ``test/``, else a seeded stratified share of ``train/`` (then split ``"train"``
    of that dataset excludes those images).
    """
    if name in _FIXED_HELDOUT:
        split = _FIXED_HELDOUT[name]
        return {"split": split, "source": "split", "description": f"the dataset's {split} split"}
    from .cifar import cifar10_layout
    from .imagefolder import heldout_folder, tree_root

    if name == "imagefolder" or (name == "cifar10" and cifar10_layout(root) == "folders"):
        folder = heldout_folder(tree_root(name, root))
        if folder is not None:
            return {"split": folder, "source": "folder", "description": f"folder {folder}/"}
        fraction = check_holdout_fraction(holdout_fraction)
        return {"split": HELDOUT, "source": "seeded", "fraction": fraction, "seed": int(seed),
                "description": f"seeded stratified split of train/ (fraction {fraction:g}, seed {int(seed)})"}
    if name == "cifar10":
        return {"split": "test", "source": "split", "description": "the dataset's test split"}
    factory = DATASETS.get(name)  # a dataset registered elsewhere: its test split, or the one it names
    split = getattr(factory, "heldout", "test")
    return {"split": split, "source": "split", "description": f"the dataset's {split} split"}


def build_dataset(name: str, split: str = "train", root: Optional[str] = None, transform=None, **options: Any) -> Dataset:
    """Build a registered dataset. Unknown options for a dataset are a user error.

    `split` is a split of the dataset ("train", "test", "val", ...) or ``HELDOUT`` ("heldout"), the
    held-out images as `heldout_split` decides; the dataset then carries that decision as
    ``.heldout`` (the dict of `heldout_split`). Every dataset carries ``.split``, the split asked for.
    """
    factory = DATASETS.get(name)
    info = None
    if split == HELDOUT:
        info = heldout_split(name, root, options.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION),
                             options.get("seed", 0))
    ds = factory(split=info["split"] if info else split, root=root, **options)
    ds.transform = transform
    ds.split = split
    if info is not None:
        ds.heldout = info
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


_EMBEDDED_SIZE_KEYS = {"train": "num_train", "test": "num_test", "val": "num_test", HELDOUT: "num_test"}


def dataset_from_config(cfg: dict, split: str = "train", transform=None, name: Optional[str] = None) -> Dataset:
    """Build the dataset described by the preset's [data] section (or `name` with the same options).

    `split`: "train" or ``HELDOUT`` ("heldout", see `heldout_split`), or a split the dataset names.
    Embedded datasets (generated or bundled) take their size from data.num_train / data.num_test and
    are generated from run.seed; on-disk datasets take data.root, and ImageFolder trees without a
    val/ or test/ folder hold out data.holdout_fraction (float in (0, 0.5], default 0.1) of each
    class of train/, chosen with run.seed.
    """
    from ..config import validate

    cfg = validate(cfg)  # a partial dict from Python gets the declared defaults
    data = cfg["data"]
    name = name or data["dataset"]
    root = data["root"] or None
    seed = int(cfg["run"]["seed"])
    fraction = float(data["holdout_fraction"])
    if name in ("shapes", "shapes-multilabel"):
        opts = {"num_samples": int(data[_EMBEDDED_SIZE_KEYS.get(split, "num_train")]),
                "image_size": int(data["image_size"]), "num_classes": int(data["num_classes"]), "seed": seed}
        return build_dataset(name, split=split, root=None, transform=transform, **opts)
    if name == "digits":
        split = split if split in ("train", HELDOUT) else "test"  # digits has no val split: any other is test
        return build_dataset(name, split=split, root=None, transform=transform, image_size=int(data["image_size"]))
    accepted = inspect.signature(DATASETS.get(name)).parameters
    opts = {k: v for k, v in (("holdout_fraction", fraction), ("seed", seed)) if k in accepted}
    ds = build_dataset(name, split=split, root=root, transform=transform, **opts)
    subset = int(data["train_subset"])
    if split == "train" and 0 < subset < len(ds):
        ds = train_subset(ds, subset, seed)
    return ds


def train_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """`n` images of `ds`, the same share of every class, drawn with `seed` (data.train_subset)."""
    from .subset import RowSubset, dataset_labels, stratified_rows

    labels = dataset_labels(ds)
    if labels is None:
        raise UserError(f"data.train_subset needs a dataset that lists its labels; {type(ds).__name__} does not")
    sub = RowSubset(ds, stratified_rows(labels, n, seed))
    sub.subset = {"images": n, "of": len(ds), "seed": seed}
    return sub
