"""Augmented views for distillation, from the shared pipelines of bssl.data.augment.

BURN trains with BYOL's asymmetric pair (view 1: blur always; view 2: rare blur, solarize); the
direct-SSL baselines use their own method's pipeline. Normalisation is the one the teachers use.
"""

from __future__ import annotations

from typing import Any, Dict

from bssl.data.augment import method_views, view_overrides


def distill_views(cfg: Dict[str, Any], num_views: int = 2, pipeline: str = "byol"):
    """Multi-view transform for the distillation data loader (returns a list of views per image).

    `distill.crop_min_scale`, `distill.hue` and `distill.blur` override the pipeline's paper values, as the
    teacher's keys of the same names do (see bssl.data.augment.method_views).
    """
    size = int(cfg["data"]["image_size"])
    return method_views(pipeline, size, num_views, **view_overrides(cfg["distill"]))
