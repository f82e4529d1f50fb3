"""Metrics of the downstream protocols: VOC average precision, top-k accuracy, RankMe.

Label convention for multi-label (VOC07) targets, per image and class: 1 positive, -1 negative,
0 "difficult" (the class is present only through objects marked difficult).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import UserError


def voc_labels(targets: np.ndarray, difficult: Optional[np.ndarray] = None) -> np.ndarray:
    """Multi-hot targets (N, C) plus difficult flags (N, C) -> int8 labels in {1, -1, 0}."""
    targets = np.asarray(targets)
    labels = np.where(targets > 0.5, 1, -1).astype(np.int8)
    if difficult is not None:
        difficult = np.asarray(difficult, dtype=bool)
        if difficult.shape != labels.shape:
            raise UserError(f"difficult flags have shape {difficult.shape}, targets {labels.shape}; they must match")
        labels[difficult & (labels == 1)] = 0
    return labels


def one_hot_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Single-label ints (N,) -> {1, -1} labels (N, C) for one-vs-rest training."""
    labels = np.asarray(labels, dtype=np.int64)
    out = -np.ones((len(labels), num_classes), dtype=np.int8)
    out[np.arange(len(labels)), labels] = 1
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC2010+ all-point AP: area under the monotone (right-to-left max) precision envelope.

    `labels` in {1, -1, 0}; 0 (difficult) is ignored, as in the VOC07 classification protocol.
    Returns NaN when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    keep = labels != 0
    scores, labels = scores[keep], labels[keep]
    n_pos = int((labels > 0).sum())
    if n_pos == 0:
        return float("nan")
    # stable sort so that ties keep input order, as VOC's devkit does
    order = np.argsort(-scores, kind="stable")
    tp = (labels[order] > 0).astype(np.float64)
    fp = 1.0 - tp
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / n_pos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple:
    """Per-class AP over columns of (N, C) scores and {1,-1,0} labels; mAP over classes with a positive."""
    aps = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])])
    valid = ~np.isnan(aps)
    return (float(aps[valid].mean()) if valid.any() else float("nan")), aps


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    topk = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def rankme(features: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the L1-normalised singular values."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise UserError(f"RankMe needs a (N, D) feature matrix with N >= 2, got shape {feats.shape}")
    s = np.linalg.svd(feats, compute_uv=False)
    p = s / (s.sum() + eps) + eps
    return float(np.exp(-(p * np.log(p)).sum()))
