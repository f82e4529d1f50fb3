"""Trainable heads of the distillation: the joint classifier g and the feature projector."""

from __future__ import annotations

import torch
from torch import nn


class JointClassifier(nn.Module):
    """g: the randomly initialised FP classifier on the frozen teacher's features.

    BURN's head on the teacher side: Linear -> BN -> ReLU -> Linear to `num_classes` pseudo-classes
    (2000 by default), Kaiming-initialised. Unlike the released code it is trained jointly.
    """

    def __init__(self, in_dim: int, num_classes: int = 2000, hidden: int = 2048):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FeatureProjector(nn.Module):
    """Maps the student's features onto the teacher's feature size for L_FS on features.

    Identity when the sizes already match, else one linear layer trained with the student.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MLPHead(nn.Module):
    """Projection head for the baselines (S2-BNN student head): Linear-BN-ReLU-Linear."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
