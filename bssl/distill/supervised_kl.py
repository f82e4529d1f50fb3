"""Baseline: supervised KL distillation (ReActNet's distributional loss) when labels are given.

A linear classifier on the frozen teacher's features is trained with cross-entropy on the labels
jointly; the student's classifier l (one output per class) matches its softened prediction with KL.
The student sees labels only through the teacher's classifier, as in ReActNet.
"""

from __future__ import annotations

from typing import Any, Dict

import torch.nn.functional as F
from torch import nn

from ..config import option
from .base import METHODS, DistillMethod, student_forward, teacher_features
from .losses import kl_distill


@METHODS.register("supervised-kl")
class SupervisedKL(DistillMethod):
    needs_labels = True
    OPTIONS = {"supervised_temperature": option(1.0, help="T of the KL to the supervised teacher head",
                                                min=0.0, min_exclusive=True)}

    @classmethod
    def student_num_classes(cls, dcfg: Dict[str, Any], num_labels: int) -> int:
        return int(num_labels)

    def __init__(self, student: nn.Module, teacher_info: Dict[str, Any], dcfg: Dict[str, Any], num_labels: int = 0):
        super().__init__(student, teacher_info, dcfg, num_labels)
        self.classifier = nn.Linear(int(teacher_info["feature_dim"]), int(num_labels))
        self.temperature = float(self.dcfg["supervised_temperature"])

    def loss(self, student, teacher, views, labels, step, total_steps):
        h = teacher_features(teacher, views)
        t_logits = [self.classifier(x) for x in h]
        ce = sum(F.cross_entropy(t, labels) for t in t_logits) / len(t_logits)
        _, s_logits = student_forward(student, views)
        kl = sum(kl_distill(s, t.detach(), self.temperature) for s, t in zip(s_logits, t_logits)) / len(s_logits)
        return {"loss": kl + ce, "kl": kl, "ce": ce}
