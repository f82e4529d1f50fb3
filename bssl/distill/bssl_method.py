"""BSSL (Kim & Choi): KL to a jointly trained random classifier g plus feature similarity, balanced by λ(t)."""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from ..config import option
from ..errors import UserError
from .base import METHODS, DistillMethod, student_forward, teacher_features
from .heads import FeatureProjector, JointClassifier
from ..train import distributed as D
from .losses import bssl_loss, infomax, symmetrised
from .schedules import lambda_at

FS_TARGETS = ("head", "features")


@METHODS.register("bssl")
class BSSL(DistillMethod):
    """L = (1-λ(t))·KL(softmax(g(h(x))/T) ‖ softmax(l(k(x))/T)) + λ(t)·L_FS, views crossed.

    Switches (all in [distill]): feature_similarity (cosine | l1 | l2 | none: ablation row 1),
    lambda_schedule (constant | step | cosine), fs_target ("head": L_FS between l(k(x)) and
    g(h(x)), which have matched sizes, as the released code does; "features": between a projection
    of k(x) and h(x), centred by the batch mean when fs_center), train_classifier (false reproduces the released code's frozen g),
    classifier_reg_weight (β of the information-maximisation term on g's outputs, added to L: a
    jointly trained g otherwise collapses onto the student and the KL term vanishes; 0 turns it off).
    """

    OPTIONS = {
        **DistillMethod.OPTIONS,
        "temperature": option(0.2, help="T of both softmaxes (the released code's 0.2)", min=0.0, min_exclusive=True),
        "feature_similarity": option("cosine", help="L_FS: cosine, l1, l2, or none (ablation row 1)",
                                     choices=("cosine", "l1", "l2", "none")),
        "lambda_schedule": option("cosine", help="lambda(t): constant (lambda_end), step or cosine",
                                  choices=("constant", "step", "cosine")),
        "lambda_start": option(0.9, help="lambda_0, weight of L_FS at the start", min=0.0, max=1.0),
        "lambda_end": option(0.7, help="lambda_T, weight of L_FS at the end", min=0.0, max=1.0),
        "fs_target": option("features", help="L_FS between projected k(x) and h(x) (features) or l(k(x)) and g(h(x)) (head)",
                            choices=FS_TARGETS),
        "fs_center": option(True, help="centre h(x) by its batch mean before L_FS on features"),
        "classifier_hidden": option(2048, help="hidden width of the classifier g", min=1),
        "train_classifier": option(True, help="train g jointly (false: the released code's frozen g)"),
        "classifier_reg_weight": option(1.0, help="weight of the infomax term that keeps a trained g from collapsing",
                                        min=0.0),
    }

    def __init__(self, student: nn.Module, teacher_info: Dict[str, Any], dcfg: Dict[str, Any], num_labels: int = 0):
        super().__init__(student, teacher_info, dcfg, num_labels)
        teacher_dim = int(teacher_info["feature_dim"])
        self.temperature = float(self.dcfg["temperature"])
        self.fs = str(self.dcfg["feature_similarity"])
        if self.fs == "none":
            self.fs = None
        self.schedule = str(self.dcfg["lambda_schedule"])
        self.lambda_start = float(self.dcfg["lambda_start"])
        self.lambda_end = float(self.dcfg["lambda_end"])
        self.fs_target = str(self.dcfg["fs_target"])
        self.fs_center = bool(self.dcfg["fs_center"])
        if self.fs_target not in FS_TARGETS:
            raise UserError(f"distill.fs_target={self.fs_target!r} is unknown; use one of {', '.join(FS_TARGETS)}")
        lambda_at(0, 1, self.schedule)  # validates the schedule name early
        self.classifier = JointClassifier(teacher_dim, self.student_num_classes(self.dcfg, num_labels),
                                          int(self.dcfg["classifier_hidden"]))
        self.train_classifier = bool(self.dcfg["train_classifier"])
        if not self.train_classifier:
            self.classifier.requires_grad_(False)
        self.reg_weight = float(self.dcfg["classifier_reg_weight"]) if self.train_classifier else 0.0
        if self.fs is not None and self.fs_target == "features":
            self.projector = FeatureProjector(student.feature_dim, teacher_dim)

    def loss(self, student, teacher, views: List[torch.Tensor], labels, step: int, total_steps: int):
        h = teacher_features(teacher, views)
        t_logits = list(self.classifier(torch.cat(h)).chunk(len(views)))
        k, s_logits = student_forward(student, views)
        if self.fs is None:
            s_fs, t_fs = [None, None], [None, None]
        elif self.fs_target == "features":
            s_fs, t_fs = [self.projector(f) for f in k], h
            if self.fs_center:
                # pooled post-ReLU features are all positive: their shared mean would dominate the cosine
                # the global batch's mean under DDP; every other term of the loss is per sample
                hs = torch.cat(h)
                mu = D.all_reduce_sum(hs.sum(0, keepdim=True)) / (hs.shape[0] * D.world_size())
                t_fs = [x - mu for x in h]
        else:
            s_fs, t_fs = s_logits, t_logits
        lam = lambda_at(step, total_steps, self.schedule, self.lambda_start, self.lambda_end)
        out = symmetrised(bssl_loss, list(zip(s_logits, s_fs)), list(zip(t_logits, t_fs)),
                          lam=lam, temperature=self.temperature, fs=self.fs)
        out["lambda"] = torch.tensor(lam if self.fs is not None else 0.0)
        if self.reg_weight > 0:
            reg = infomax(torch.cat(t_logits), self.temperature)
            out["loss"] = out["loss"] + self.reg_weight * reg
            out["g_infomax"] = reg
        return out
