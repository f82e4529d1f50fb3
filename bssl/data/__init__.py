"""Datasets: a registry of embedded (generated or bundled) and on-disk datasets.

Every dataset yields ``(image, target)`` where ``image`` is a ``uint8`` tensor of shape
(3, H, W) and ``target`` is an ``int`` class (single-label) or a float multi-hot tensor
(multi-label). A ``transform`` (torchvision v2) is applied to the image tensor.
Datasets also expose ``num_classes``, ``classes`` and ``multilabel``.

Splits: ``"train"`` and ``HELDOUT`` (``"heldout"``), the held-out images of any dataset, decided
in one place, `heldout_split` (test split of shapes/digits/CIFAR/STL-10/VOC2007; val/, else
test/, else a seeded stratified share of train/ for image folders, set by data.holdout_fraction
and run.seed). Use `dataset_from_config(cfg, split)` to build them; `summarize(cfg)` and
`format_summary` describe what a run uses (sizes, classes, how the held-out split was obtained).
"""

from .registry import (DATASETS, DEFAULT_HOLDOUT_FRACTION, HELDOUT, ArrayDataset, build_dataset,
                       check_holdout_fraction, dataset_from_config, dataset_names, heldout_split)
from . import synthetic as _synthetic  # noqa: F401  (registers embedded datasets)
from . import cifar as _cifar, imagefolder as _imagefolder, stl10 as _stl10, voc as _voc  # noqa: F401,E501  (on-disk datasets)

from .imagefolder import read_rgb
from .summary import format_summary, image_sizes, summarize

__all__ = ["DATASETS", "DEFAULT_HOLDOUT_FRACTION", "HELDOUT", "ArrayDataset", "build_dataset", "check_holdout_fraction",
           "dataset_from_config", "dataset_names", "format_summary", "heldout_split", "image_sizes", "read_rgb",
           "summarize"]
