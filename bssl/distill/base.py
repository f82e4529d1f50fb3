"""The interface every distillation method (BSSL and the baselines) implements.

A method owns its auxiliary trainable modules (the classifier g, projectors, EMA targets) as
submodules; the student and the frozen teacher are passed to `loss` each step and never become
submodules, so `method.state_dict()` holds exactly the method's own state and `method.train()`
can never switch the teacher's BatchNorm layers out of eval mode.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch
from torch import nn

from ..config import Key, defaults, option
from ..registry import Registry

METHODS: Registry[type] = Registry("distillation method")


class DistillMethod(nn.Module):
    #: whether the method reads the teacher (direct SSL on the student does not)
    needs_teacher: bool = True
    #: whether the method needs class labels (supervised KL)
    needs_labels: bool = False
    #: whether the loss compares samples across the batch (contrastive negatives, BYOL's BN-dependent
    #: targets), so that the student's BN needs global statistics under DDP (distill.sync_bn = auto)
    needs_global_bn: bool = False
    #: number of augmented views per image the method consumes
    num_views: int = 2
    #: augmentation pipeline of bssl.data.augment (BURN uses BYOL's asymmetric views)
    pipeline: str = "byol"
    #: the method's own [distill] keys with their defaults, validated by bssl.config
    OPTIONS: Dict[str, Key] = {
        "num_pseudo_classes": option(2000, help="outputs of the classifiers g and l (BURN: 2000 pseudo-classes)", min=1),
    }

    def __init__(self, student: nn.Module, teacher_info: Dict[str, Any], dcfg: Dict[str, Any], num_labels: int = 0):
        """`teacher_info` is load_teacher's info (feature_dim, path, ...); empty without a teacher."""
        super().__init__()
        # the declared defaults under whatever subset of [distill] the caller passes (tests, notebooks)
        self.dcfg = {**defaults(type(self).OPTIONS), **dcfg}

    @classmethod
    def student_num_classes(cls, dcfg: Dict[str, Any], num_labels: int) -> int:
        """Output size of the student's classifier l for this method."""
        return int(dcfg.get("num_pseudo_classes", cls.OPTIONS["num_pseudo_classes"].default))

    def loss(self, student: nn.Module, teacher: Optional[nn.Module], views: List[torch.Tensor],
             labels: Optional[torch.Tensor], step: int, total_steps: int) -> Dict[str, torch.Tensor]:
        """Return a dict with the scalar `loss` to minimise plus scalar terms to log."""
        raise TypeError(f"{type(self).__name__} does not define loss()")

    def after_step(self, student: nn.Module, step: int, total_steps: int) -> None:
        """Hook after the optimiser step (EMA updates)."""

    def grad_groups(self, student: nn.Module) -> Dict[str, Iterable[nn.Parameter]]:
        """Parameter groups whose gradient norms are logged separately (the paper's Fig. 2)."""
        cls_ids = {id(p) for p in student.classifier.parameters()}
        groups = {
            "features": [p for p in student.parameters() if id(p) not in cls_ids],
            "student_classifier": list(student.classifier.parameters()),
        }
        for name, module in self.named_children():
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups[name] = params
        return groups

    def extra_state(self) -> Dict[str, Any]:
        return {}


def teacher_features(teacher: nn.Module, views: List[torch.Tensor]) -> List[torch.Tensor]:
    """h(x) for each view with the teacher frozen: eval mode (BN statistics untouched), no graph."""
    teacher.eval()
    with torch.no_grad():
        feats = teacher(torch.cat(views))
    return list(feats.chunk(len(views)))


def student_forward(student: nn.Module, views: List[torch.Tensor]):
    """k(x) and l(k(x)) for each view in one batched pass."""
    feats = student.features(torch.cat(views))
    logits = student.classifier(feats)
    return list(feats.chunk(len(views))), list(logits.chunk(len(views)))
