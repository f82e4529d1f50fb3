"""The learning-rate schedule of every trainer: linear warm-up, then cosine annealing to 0 (BURN's policy)."""

from __future__ import annotations

import math
from typing import Sequence


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, warmup_start: float = 1e-4) -> float:
    """Linear warm-up from `warmup_start` to 1 over `warmup_steps`, then cosine annealing to 0."""
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / max(warmup_steps, 1)
    span = max(total_steps - warmup_steps, 1)
    t = min(step - warmup_steps, span)
    return 0.5 * (1.0 + math.cos(math.pi * t / span))


def restarted_lr_factor(step: int, steps_per_epoch: int, total_epochs: int, starts: Sequence[int],
                        warmup_steps: int) -> float:
    """lr_factor of global `step` when the schedule starts over at the epochs `starts` (FUSSL's phases);
    only the first schedule warms up."""
    bounds = [int(e) * steps_per_epoch for e in starts] + [total_epochs * steps_per_epoch]
    i = max(j for j in range(len(starts)) if bounds[j] <= step)
    return lr_factor(step - bounds[i], bounds[i + 1] - bounds[i], warmup_steps if i == 0 else 0)
