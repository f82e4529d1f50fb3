"""Shared pieces of the students: width scaling, stem choice and input-size checks."""

from __future__ import annotations

from ..errors import UserError

IMAGENET_STEM_MIN_INPUT = 96  # stem="auto": the ImageNet stem from 96 px up (when the size divides by 32)


def scaled_base(channels: int, width: float) -> int:
    """Scale the first block's channel count by `width`, round to a multiple of 8, at least 8.

    Later stages are exact power-of-two multiples of this base, so every channel doubling of
    the original topology stays an exact doubling after scaling.
    """
    if not (isinstance(width, (int, float)) and width > 0):
        raise UserError(f"width multiplier must be a positive number, got {width!r}")
    return max(8, int(round(channels * width / 8.0)) * 8)


def resolve_stem(stem: str, input_size: int) -> str:
    if stem == "auto":
        # both ImageNet stems reduce by 32 overall; anything else (32/64 px, 112 px) gets the small stem
        return "imagenet" if input_size >= IMAGENET_STEM_MIN_INPUT and input_size % 32 == 0 else "small"
    if stem not in ("small", "imagenet"):
        raise UserError(f"stem must be 'auto', 'small' or 'imagenet', got {stem!r}")
    return stem


def check_input_size(model_name: str, input_size: int, stem: str, total_stride: int) -> int:
    """Input must be divisible by the network's total stride and leave a final map >= 2x2."""
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size <= 0:
        raise UserError(f"input size must be a positive integer, got {input_size!r}")
    final = input_size // total_stride
    if input_size % total_stride or final < 2:
        lo = 2 * total_stride
        raise UserError(
            f"{model_name} with the {stem!r} stem reduces the input by {total_stride}x and needs an input size "
            f"that is a multiple of {total_stride} and at least {lo} (final map >= 2x2); got {input_size}. "
            f"Use --stem {'imagenet' if stem == 'small' else 'small'} or another --input-size"
        )
    return final


def check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
