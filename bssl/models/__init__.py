"""Binary students (ReActNet-A/B/C, Bi-Real-Net-18, Bi-Real-based ReActNet-18) and FP backbones.

`build_model(name, ...)` returns a student with `.features(x) -> (N, feature_dim)` (k in the
paper), `.classifier` (nn.Linear, l), `.feature_dim` and `.spec` (the build arguments, enough to
rebuild it). `save_student` / `load_student` store and restore it with its stage.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from torch import nn

from ..errors import UserError
from ..nn import set_stage
from ..registry import Registry
from ..utils import load_checkpoint, save_checkpoint
from .backbones import BACKBONES, build_backbone
from .birealnet import BiRealNet18, make_birealnet18
from .common import check_num_classes, resolve_stem
from .official import load_official_reactnet
from .reactnet import ReActBlock, ReActNet, make_reactnet

MODELS: Registry = Registry("model")
MODELS.register("reactnet-a")(make_reactnet("reactnet-a", "binary"))
MODELS.register("reactnet-b")(make_reactnet("reactnet-b", "fp-group4"))
MODELS.register("reactnet-c")(make_reactnet("reactnet-c", "fp"))
MODELS.register("birealnet-18")(make_birealnet18("birealnet-18", rprelu=False))
MODELS.register("reactnet-18")(make_birealnet18("reactnet-18", rprelu=True))


def build_model(name: str, *, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
                stem: str = "auto", stage: int = 2, pad_value: float = 1.0) -> nn.Module:
    """Build student `name`.

    stem "auto" picks the ImageNet stem for inputs of 96 px and more that divide by 32 (224, 160,
    96) and the small stem otherwise (32, 64, 112 px). `stage` 1 = FP weights, 2 = binary weights.
    """
    factory = MODELS.get(name)
    check_num_classes(num_classes)
    if stage not in (1, 2):
        raise UserError(f"stage must be 1 or 2, got {stage!r}")
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
        raise UserError(f"pad_value must be a number (+1 for one-padding, 0 for zero padding), got {pad_value!r}")
    resolved = resolve_stem(stem, input_size if isinstance(input_size, int) else 0)
    model = factory(num_classes=num_classes, input_size=input_size, width=float(width) if isinstance(width, (int, float)) else width,
                    stem=resolved, pad_value=float(pad_value), binary_weights=stage == 2)
    model.spec = {"name": name, "num_classes": num_classes, "input_size": input_size, "width": float(width),
                  "stem": resolved, "stage": stage, "pad_value": float(pad_value)}
    return model


def save_student(path: os.PathLike | str, model: nn.Module, config: Dict[str, Any], **extra: Any) -> None:
    """Write a student checkpoint (kind "student": spec, state_dict, stage, plus `extra`)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        raise UserError("save_student needs a model made by bssl.models.build_model (it has no .spec)")
    from ..nn import get_stage

    stage = get_stage(model)
    state = {"spec": {**spec, "stage": stage}, "state_dict": model.state_dict(), "stage": stage, **extra}
    save_checkpoint(path, "student", state, config)


def load_student(path: os.PathLike | str) -> nn.Module:
    """Rebuild a student from a checkpoint written by save_student (UserError on other kinds)."""
    return student_from_checkpoint(load_checkpoint(path, expect_kind="student"), path)


def student_from_checkpoint(ckpt: dict, path: os.PathLike | str, what: str = "student",
                            fix: str = "re-save it with save_student") -> nn.Module:
    """The student a loaded checkpoint dict describes (its `spec`, `state_dict`, `stage`); UserError naming
    `what` kind of checkpoint and `fix` when an entry is missing or the weights do not fit the spec."""
    for key in ("spec", "state_dict", "stage"):
        if key not in ckpt:
            raise UserError(f"{what} checkpoint {path} lacks the {key!r} entry; {fix}")
    spec = dict(ckpt["spec"])
    name = spec.pop("name")
    spec.pop("stage", None)
    model = build_model(name, **spec, stage=int(ckpt["stage"]))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UserError(f"{what} checkpoint {path} does not match its spec {ckpt['spec']}: "
                        f"{str(exc).splitlines()[0]}") from None
    return model


__all__ = [
    "MODELS", "BACKBONES", "build_model", "build_backbone", "save_student", "load_student", "student_from_checkpoint",
    "ReActNet", "ReActBlock", "BiRealNet18", "set_stage", "load_official_reactnet",
]
