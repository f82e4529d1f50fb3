"""Losses and schedules of the teacher methods as pure functions (no module state)."""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: positives q.k, negatives q.queue; q, k (N, D) and queue (K, D) are L2-normalised."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def nt_xent(zs: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over K views of N images (zs: K tensors (N, D), any norm).

    Each of the K*N embeddings is an anchor; its positives are the other views of the same image,
    its negatives every other embedding. With K = 2 this is the usual 2N-way loss.
    """
    k, n = len(zs), zs[0].shape[0]
    z = F.normalize(torch.cat(list(zs), dim=0), dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(k * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    image = torch.arange(n, device=z.device).repeat(k)
    positive = (image[:, None] == image[None, :]) & ~self_mask
    log_prob = logits.log_softmax(dim=1)
    return -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / (k - 1)).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def byol_regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised MSE 2 - 2 cos(p, stopgrad(z)), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def byol_tau(step: int, total_steps: int, tau0: float) -> float:
    """BYOL's target momentum 1 - (1 - tau0)(cos(pi k / K) + 1) / 2: tau0 at step 0, 1 at the end."""
    k = min(max(step, 0), max(total_steps, 1))
    return 1.0 - (1.0 - tau0) * (math.cos(math.pi * k / max(total_steps, 1)) + 1.0) / 2.0


def pairwise_views_loss(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], fn) -> torch.Tensor:
    """Mean of fn(preds[i], targets[j]) over all i != j with j a target (global) view.

    With two views this is the usual symmetrised loss 0.5 (fn(p1, z2) + fn(p2, z1)); with K views it
    is SimSiam's K-augmentation baseline (all ordered pairs); extra local crops only predict.
    """
    terms = [fn(p, z) for i, p in enumerate(preds) for j, z in enumerate(targets) if i != j]
    return torch.stack(terms).mean()


def ensiam_target(zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnSiam's ensemble target: stopgrad(mean_k z_k) over the K views."""
    return torch.stack([z.detach() for z in zs]).mean(dim=0)


def ensiam_loss(ps: Sequence[torch.Tensor], zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnSiam: mean_k D(p_k, stopgrad(mean_j z_j)) with D the negative cosine."""
    target = ensiam_target(zs)
    return torch.stack([negative_cosine(p, target) for p in ps]).mean()


def fuzzy_labels(votes: torch.Tensor, num_classes: int, soft_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """FUSSL's fuzzy pseudo-labels from the per-block argmax classes `votes` (N, m).

    A class chosen by a strict majority of the m blocks becomes a hard (one-hot) label; otherwise
    the label is soft: the distribution of the blocks' votes. `soft_only` always uses the vote
    distribution. Returns (labels (N, num_classes) float, hard (N,) bool).
    """
    n, m = votes.shape
    counts = torch.zeros(n, num_classes, dtype=torch.float32, device=votes.device)
    counts.scatter_add_(1, votes.long(), torch.ones(n, m, device=votes.device))
    soft = counts / m
    if soft_only:
        return soft, torch.zeros(n, dtype=torch.bool, device=votes.device)
    top_count, top_class = counts.max(dim=1)
    hard = top_count > m / 2
    labels = torch.where(hard[:, None], F.one_hot(top_class, num_classes).float(), soft)
    return labels, hard


def pseudo_label_error(votes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-block error against the fuzzy labels: mean over images of 1 - labels[i, vote of the block]."""
    picked = labels.gather(1, votes.long())  # (N, m)
    return (1.0 - picked).mean(dim=0)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability target (hard labels are one-hot rows)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
