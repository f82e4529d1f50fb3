"""Pure loss functions of BSSL distillation and its baselines.

Every function takes tensors and returns a scalar tensor; none of them detaches anything or
touches a module, so the caller decides which side receives gradients (in BSSL both the student
and the jointly trained classifier g do; the frozen teacher h never does).
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F

from ..errors import UserError


def kl_distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)), summed over classes, averaged over the batch.

    The direction is the distillation one: the teacher's distribution is the target, so the loss is
    sum_c p_t log(p_t / p_s). No T^2 factor, as in the released BURN code.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos(a_i, b_i); lies in [0, 2]."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per element (scale independent of the feature size)."""
    return F.l1_loss(a, b, reduction="mean")


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per element."""
    return F.mse_loss(a, b, reduction="mean")


FEATURE_SIMILARITY: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_distance,
    "l1": l1_distance,
    "l2": l2_distance,
}


def feature_similarity_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return FEATURE_SIMILARITY[name]
    except KeyError:
        raise UserError(
            f"distill.feature_similarity={name!r} is unknown; use one of {sorted(FEATURE_SIMILARITY)} or 'none'"
        ) from None


def bssl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              student_feat: torch.Tensor | None, teacher_feat: torch.Tensor | None,
              lam: float, temperature: float, fs: str | None = "cosine") -> Dict[str, torch.Tensor]:
    """One view pair of the BSSL objective: (1 - lam) * KL + lam * L_FS.

    With fs None (ablation row 1, random classifier only) the loss is the KL term alone.
    Returns a dict with `loss`, `kl` and `fs` (fs is 0 when disabled).
    """
    kl = kl_distill(student_logits, teacher_logits, temperature)
    if fs is None or fs == "none":
        return {"loss": kl, "kl": kl, "fs": torch.zeros((), device=kl.device)}
    if student_feat is None or teacher_feat is None:
        raise ValueError("feature similarity needs student and teacher features")
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"feature similarity needs matched dims, got {tuple(student_feat.shape)} vs {tuple(teacher_feat.shape)}"
        )
    dist = feature_similarity_fn(fs)(student_feat, teacher_feat)
    return {"loss": (1.0 - lam) * kl + lam * dist, "kl": kl, "fs": dist}


def symmetrised(loss_fn: Callable[..., Dict[str, torch.Tensor]], student_views, teacher_views, **kw) -> Dict[str, torch.Tensor]:
    """Cross the views as BURN does: student(view 1) vs teacher(view 2) and vice versa, averaged.

    `student_views` and `teacher_views` hold two (logits, features) pairs each; `loss_fn` is called
    as loss_fn(student_logits, teacher_logits, student_feat, teacher_feat, **kw).
    """
    if len(student_views) != 2 or len(teacher_views) != 2:
        raise ValueError("cross-view symmetrisation needs exactly two views")
    (s1, fs1), (s2, fs2) = student_views
    (t1, ft1), (t2, ft2) = teacher_views
    a = loss_fn(s1, t2, fs1, ft2, **kw)
    b = loss_fn(s2, t1, fs2, ft1, **kw)
    return {k: 0.5 * (a[k] + b[k]) for k in a}


def infomax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Information-maximisation regulariser of a classifier, normalised by log(C); lies in [-1, 0].

    (H(p_i) averaged over the batch - H(mean_i p_i)) / log C, with p = softmax(logits / T): 0 for
    a collapsed classifier (the same distribution for every input, uniform or not), -1 for confident,
    balanced pseudo-labels. Keeps the jointly trained g from collapsing onto the student (a constant
    output makes the KL term zero for any student).
    """
    log_p = F.log_softmax(logits / temperature, dim=1)
    p = log_p.exp()
    cond = -(p * log_p).sum(1).mean()
    # the marginal is a global-batch statistic: summed over processes under DDP (differentiably), so the
    # gradient DDP averages is the single-process one
    from ..train import distributed as D

    mean_p = D.all_reduce_sum(p.sum(0)) / (p.shape[0] * D.world_size())
    marg = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
    return (cond - marg) / torch.log(torch.tensor(float(logits.shape[1])))


def cross_entropy_soft(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with integer class targets (supervised heads)."""
    return F.cross_entropy(student_logits, target)
