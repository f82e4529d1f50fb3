"""Datasets: a registry of embedded (generated or bundled) and on-disk datasets.

Every dataset yields ``(image, target)`` where ``image`` is a ``uint8`` tensor of shape
(3, H, W) and ``target`` is an ``int`` class (single-label) or a float multi-hot tensor
(multi-label). A ``transform`` (torchvision v2) is applied to the image tensor.
Datasets also expose ``num_classes``, ``classes`` and ``multilabel``.
"""

from .registry import DATASETS, ArrayDataset, build_dataset, dataset_from_config, dataset_names
from . import synthetic as _synthetic  # noqa: F401  (registers embedded datasets)
from . import cifar as _cifar, imagefolder as _imagefolder, stl10 as _stl10, voc as _voc  # noqa: F401,E501  (on-disk datasets)

__all__ = ["DATASETS", "ArrayDataset", "build_dataset", "dataset_from_config", "dataset_names"]
