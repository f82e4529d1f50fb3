"""Augmented views for distillation: BYOL-style asymmetric pair (BURN's pipelines).

The teacher engineer's `bssl.data.augment` is used when it provides the BYOL pipeline, so the
student sees the teacher's normalisation; otherwise an equivalent torchvision v2 pipeline is
built here.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _byol_view(size: int, blur_p: float, solarize_p: float, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    kernel = max(3, (size // 10) | 1)  # odd kernel about 10% of the image, as BYOL
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
        v2.RandomSolarize(128, p=solarize_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class TwoViews:
    """Applies one transform per view and returns the list of views."""

    def __init__(self, transforms: List[Any]):
        self.transforms = transforms

    def __call__(self, img):
        return [t(img) for t in self.transforms]


def eval_transform(size: int) -> v2.Compose:
    """Deterministic transform matching the training normalisation (for feature extraction)."""
    try:
        from bssl.data import augment  # noqa: F401
        fn = getattr(augment, "eval_transform", None)
        if fn is not None:
            return fn(size)
    except ImportError:
        pass
    return v2.Compose([v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def distill_views(cfg: Dict[str, Any], num_views: int = 2, pipeline: str = "byol"):
    """Multi-view transform for the distillation data loader."""
    size = int(cfg.get("data", {}).get("image_size", 32))
    views = [_byol_view(size, 1.0, 0.0), _byol_view(size, 0.1, 0.2)]
    while len(views) < num_views:
        views.append(_byol_view(size, 0.5, 0.0))
    return TwoViews(views[:num_views])
