"""FP self-supervised teachers (MoCo v2, BYOL, SimSiam, SimSiam K-aug, EnSiam, FUSSL, and SimCLR).

Python API: `train_teacher(cfg, out_dir, resume=False) -> dict` and
`load_teacher(path) -> (backbone, info)`; methods are in the `METHODS` registry.
"""

from .base import METHODS, TeacherMethod, method_config
from . import mocov2, byol, simsiam, simsiam_kaug, ensiam, fussl, simclr  # noqa: F401  (register the methods)
from .backbone import build_backbone
from .io import load_teacher, load_teacher_heads
from .train import build_method, train_teacher

__all__ = ["METHODS", "TeacherMethod", "method_config", "build_backbone", "build_method", "load_teacher",
           "load_teacher_heads", "train_teacher"]
