"""BSSL distillation: the objective, the joint classifier g, the two-stage trainer and baselines.

`run_distill(cfg, teacher_path, out_dir, resume=False, *, method=None, stage=None, init=None)` is the
Python entry point; `METHODS` lists "bssl" and the baselines.
"""

from .base import METHODS, DistillMethod
from .losses import bssl_loss, cosine_distance, kl_distill, l1_distance, l2_distance, symmetrised
from .schedules import lambda_at, lr_factor
from . import bssl_method, direct_ssl, s2bnn, supervised_kl  # noqa: F401  (register the methods)
from .trainer import load_frozen_teacher, run_distill

__all__ = [
    "METHODS", "DistillMethod", "run_distill", "load_frozen_teacher",
    "bssl_loss", "cosine_distance", "kl_distill", "l1_distance", "l2_distance", "symmetrised",
    "lambda_at", "lr_factor",
]
