"""Augmentation pipelines of the self-supervised methods (torchvision transforms v2).

Every pipeline takes a uint8 (3, H, W) tensor (what bssl datasets yield) and returns a normalised
float tensor. `MultiView` turns a list of per-view pipelines into one callable returning the list of
views; `multicrop` adds small local crops (SwAV-style) behind the global views.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torchvision.transforms import v2

from ..config import as_bool
from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _blur_kernel(size: int) -> int:
    """About 10% of the image side, odd, at least 3 (23 px at 224 as in MoCo/BYOL)."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 == 1 else k + 1


def _to_float_normalised() -> List[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(image_size: int) -> Callable:
    """Un-augmented input for features (kNN monitor, FUSSL labelling, evaluation)."""
    return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), *_to_float_normalised()])


def mocov2_transform(image_size: int, scale=(0.2, 1.0), hue: float = 0.1, blur: bool = True) -> Callable:
    """MoCo v2 aug+: crop 0.2-1, colour jitter 0.4/0.4/0.4/0.1 p0.8, grey 0.2, blur p0.5, flip."""
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, hue)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0))], p=0.5 if blur else 0.0),
        v2.RandomHorizontalFlip(),
        *_to_float_normalised(),
    ])


def byol_transform(image_size: int, blur_p: float, solarize_p: float, scale=(0.08, 1.0), hue: float = 0.1,
                   blur: bool = True) -> Callable:
    """BYOL's view pipeline: crop 0.08-1, flip, jitter 0.4/0.4/0.2/0.1 p0.8, grey 0.2, then blur and
    solarize with per-view probabilities (view 1: blur 1.0, solarize 0; view 2: blur 0.1, solarize 0.2)."""
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, hue)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0))], p=blur_p if blur else 0.0),
        v2.RandomSolarize(threshold=128, p=solarize_p),  # uint8 input: 128 is the paper's 0.5
        *_to_float_normalised(),
    ])


def byol_views(image_size: int, num_views: int = 2, scale=(0.08, 1.0), hue: float = 0.1,
               blur: bool = True) -> List[Callable]:
    """Asymmetric BYOL pair, repeated for more views (odd views like view 1, even like view 2)."""
    first = byol_transform(image_size, blur_p=1.0, solarize_p=0.0, scale=scale, hue=hue, blur=blur)
    second = byol_transform(image_size, blur_p=0.1, solarize_p=0.2, scale=scale, hue=hue, blur=blur)
    return [first if i % 2 == 0 else second for i in range(num_views)]


def local_crop_transform(local_size: int, scale=(0.05, 0.14), hue: float = 0.1, blur: bool = True) -> Callable:
    """Small multi-crop view: the MoCo v2 colour pipeline on a small, low-scale crop."""
    return mocov2_transform(local_size, scale=scale, hue=hue, blur=blur)


def multicrop(global_views: Sequence[Callable], num_local: int, local_size: int, local_scale=(0.05, 0.14),
              hue: float = 0.1, blur: bool = True) -> List[Callable]:
    if num_local < 0:
        raise UserError(f"teacher.multicrop_local must be >= 0, not {num_local}")
    return list(global_views) + [local_crop_transform(local_size, local_scale, hue, blur) for _ in range(num_local)]


class MultiView:
    """Apply each pipeline to the same image: returns [view_0, view_1, ...]."""

    def __init__(self, transforms: Sequence[Callable]):
        if not transforms:
            raise UserError("an augmentation needs at least one view")
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor) -> List[torch.Tensor]:
        return [t(img) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)


def _aug_plus_views(size: int, n: int, scale, hue: float, blur: bool) -> List[Callable]:
    return [mocov2_transform(size, scale, hue, blur) for _ in range(n)]


# name -> (views(size, n, crop_scale, hue, blur), paper's crop scale); SimSiam uses MoCo v2 aug+
PIPELINES = {
    "mocov2": (_aug_plus_views, (0.2, 1.0)),
    "simsiam": (_aug_plus_views, (0.2, 1.0)),
    "byol": (byol_views, (0.08, 1.0)),
}
PAPER_HUE = 0.1  # hue jitter of MoCo v2 aug+ and BYOL
VIEW_KEYS = ("crop_min_scale", "hue", "blur")  # config keys ([teacher], [distill]) that override the paper's views


def view_overrides(section: Dict[str, Any]) -> Dict[str, Any]:
    """The method_views keyword arguments a config section sets (missing keys: the paper's values)."""
    return {k: section.get(k) for k in VIEW_KEYS}


def method_views(pipeline: str, image_size: int, num_views: int, num_local: int = 0, local_size: int = 0,
                 crop_min_scale: Optional[float] = None, hue: Optional[float] = None,
                 blur: Optional[bool] = None) -> MultiView:
    """The per-view pipelines of a method: `num_views` global views plus optional local crops.

    `crop_min_scale` replaces the paper's lower bound of the random-resized-crop area (0.2 for
    MoCo v2 / SimSiam, 0.08 for BYOL); small-object data keeps the object in both views with a higher one.
    `hue` replaces the paper's hue jitter (0.1). Where colour is random per image and carries no
    class information (the embedded shapes), 0.5 (any hue) takes away the colour shortcut that
    otherwise solves instance discrimination without learning shape. `blur=False` drops the
    Gaussian blur, as the CIFAR recipes of solo-learn do: at 32 px a sigma-2 blur erases the shapes.
    """
    if pipeline not in PIPELINES:
        raise UserError(f"unknown augmentation pipeline {pipeline!r}; known: {', '.join(sorted(PIPELINES))}")
    build, scale = PIPELINES[pipeline]
    if crop_min_scale is not None:
        if not 0.0 < float(crop_min_scale) <= 1.0:
            raise UserError(f"crop_min_scale = {crop_min_scale} must be in (0, 1]")
        scale = (float(crop_min_scale), 1.0)
    hue = PAPER_HUE if hue is None else float(hue)
    if not 0.0 <= hue <= 0.5:
        raise UserError(f"hue jitter = {hue} must be in [0, 0.5]")
    flag = True if blur is None else as_bool(blur)
    if flag is None:
        raise UserError(f"blur = {blur!r} must be true or false")
    views = build(image_size, num_views, scale, hue, flag)
    if num_local:
        views = multicrop(views, num_local, local_size or max(8, int(round(image_size * 96 / 224))), hue=hue, blur=flag)
    return MultiView(views)
