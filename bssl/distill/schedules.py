"""Schedules as pure functions of the iteration: the balance λ(t) (the learning rate's is bssl.train's)."""

from __future__ import annotations

import math

from ..errors import UserError
from ..train.schedule import lr_factor  # noqa: F401  (part of bssl.distill's API)

LAMBDA_SCHEDULES = ("constant", "step", "cosine")


def lambda_at(step: int, total_steps: int, schedule: str = "cosine", start: float = 0.9, end: float = 0.7) -> float:
    """Weight of the feature-similarity term at iteration `step` of `total_steps`.

    cosine (BURN): end - (end - start) * (cos(pi t / T) + 1) / 2, i.e. start at t=0, end at t=T;
    step: start for the first half, end for the second; constant: end throughout (the paper's 0.7).
    """
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    t = min(max(step, 0), total_steps)
    if schedule == "constant":
        return float(end)
    if schedule == "step":
        return float(start if t < total_steps / 2 else end)
    if schedule == "cosine":
        return float(end - (end - start) * (math.cos(math.pi * t / total_steps) + 1) / 2)
    raise UserError(f"distill.lambda_schedule={schedule!r} is unknown; use one of {', '.join(LAMBDA_SCHEDULES)}")
