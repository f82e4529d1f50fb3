"""Switch a student between stage 1 (FP weights) and stage 2 (binary weights) in place.

Only the `binary_weights` flag of each BinaryConv2d changes: parameter names, shapes and values
stay as they are, so a stage-1 state dict loads into a stage-2 model with strict=True and the
trained weights carry over (the official code re-creates the layers and loses them).
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .conv import BinaryConv2d


def set_stage(model: nn.Module, stage: int) -> nn.Module:
    if stage not in (1, 2):
        raise UserError(f"stage must be 1 (binary activations, FP weights) or 2 (fully binary), got {stage!r}")
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.binary_weights = stage == 2
    if hasattr(model, "spec") and isinstance(model.spec, dict):
        model.spec["stage"] = stage
    return model


def get_stage(model: nn.Module) -> int:
    """2 if every BinaryConv2d has binary weights, 1 if none has; ValueError if mixed or none."""
    flags = {m.binary_weights for m in model.modules() if isinstance(m, BinaryConv2d)}
    if flags == {True}:
        return 2
    if flags == {False}:
        return 1
    raise ValueError("model has mixed binary_weights flags" if flags else "model has no BinaryConv2d")
