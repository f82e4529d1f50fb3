"""Datasets: a registry of embedded (generated or bundled) and on-disk datasets.

Every dataset yields ``(image, target)`` where ``image`` is a ``uint8`` tensor of shape
(3, H, W) and ``target`` is an ``int`` class (single-label) or a float multi-hot tensor
(multi-label). A ``transform`` (torchvision v2) is applied to the image tensor.
Datasets also expose ``num_classes``, ``classes`` and ``multilabel``.
"""

from .registry import DATASETS, ArrayDataset, build_dataset, dataset_from_config, dataset_names
from . import synthetic as _synthetic  # noqa: F401  (registers embedded datasets)

__all__ = ["DATASETS", "ArrayDataset", "build_dataset", "dataset_from_config", "dataset_names"]
