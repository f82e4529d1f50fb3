"""BSSL distillation: the objective, the joint classifier g, the two-stage trainer and baselines."""

from .losses import bssl_loss, cosine_distance, kl_distill, l1_distance, l2_distance, symmetrised
from .schedules import lambda_at, lr_factor

__all__ = [
    "bssl_loss", "cosine_distance", "kl_distill", "l1_distance", "l2_distance", "symmetrised",
    "lambda_at", "lr_factor",
]
