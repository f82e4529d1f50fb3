"""Weighted kNN classifier on frozen features (Wu et al. 2018; k=200, T=0.07 cosine vote).

Both the queries and the memory bank are processed in chunks with a running top-k merge, so
the bank can be a memory-mapped (1M, 4096) array that never sits in RAM as a whole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import UserError
from .features import Features
from .metrics import mean_average_precision, topk_accuracy, voc_labels
from .registry import PROTOCOLS


def _normalise(block: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.from_numpy(np.asarray(block, dtype=np.float32)), dim=1)


def knn_topk(bank: np.ndarray, queries: np.ndarray, k: int, query_chunk: int = 256,
             bank_chunk: int = 65536) -> tuple:
    """Cosine top-k neighbours of every query in the bank: (similarities (Q, k), indices (Q, k))."""
    n_bank = len(bank)
    k = min(k, n_bank)
    sims_out = np.empty((len(queries), k), dtype=np.float32)
    idx_out = np.empty((len(queries), k), dtype=np.int64)
    for q0 in tqdm(range(0, len(queries), query_chunk), desc="knn", disable=None, leave=False):
        q = _normalise(queries[q0:q0 + query_chunk])
        best_s = torch.full((len(q), 0), -2.0)
        best_i = torch.zeros((len(q), 0), dtype=torch.long)
        for b0 in range(0, n_bank, bank_chunk):
            sims = q @ _normalise(bank[b0:b0 + bank_chunk]).T
            s, i = sims.topk(min(k, sims.shape[1]), dim=1)
            cand_s = torch.cat([best_s, s], 1)
            cand_i = torch.cat([best_i, i + b0], 1)
            best_s, pos = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
            best_i = cand_i.gather(1, pos)
        sims_out[q0:q0 + len(q)] = best_s.numpy()
        idx_out[q0:q0 + len(q)] = best_i.numpy()
    return sims_out, idx_out


def knn_scores(bank: np.ndarray, bank_targets: np.ndarray, queries: np.ndarray, num_classes: int, k: int = 200,
               temperature: float = 0.07, query_chunk: int = 256, bank_chunk: int = 65536) -> np.ndarray:
    """Class scores (Q, C): sum over the k nearest neighbours of exp(sim / T) times their label(s)."""
    if k < 1:
        raise UserError(f"knn k must be >= 1, got {k}")
    if temperature <= 0:
        raise UserError(f"knn temperature must be > 0, got {temperature}")
    sims, idx = knn_topk(bank, queries, k, query_chunk, bank_chunk)
    bank_targets = np.asarray(bank_targets)
    scores = np.empty((len(queries), num_classes), dtype=np.float32)
    for q0 in range(0, len(queries), query_chunk):  # votes per chunk: (chunk, k, C) stays small
        sl = slice(q0, q0 + query_chunk)
        weights = torch.from_numpy(sims[sl] / temperature).exp()
        if bank_targets.ndim == 1:
            labels = torch.from_numpy(bank_targets[idx[sl]].astype(np.int64))
            votes = torch.zeros(len(labels), num_classes).scatter_add_(1, labels, weights)
        else:
            votes = torch.einsum("qk,qkc->qc", weights, torch.from_numpy(bank_targets[idx[sl]].astype(np.float32)))
        scores[sl] = votes.numpy()
    return scores


def knn_protocol(train: Features, test: Features, k: int = 200, temperature: float = 0.07,
                 query_chunk: int = 256, bank_chunk: int = 65536) -> dict:
    scores = knn_scores(train.features, train.targets, test.features, train.num_classes, k, temperature,
                        query_chunk, bank_chunk)
    details = {"k": min(k, len(train.features)), "temperature": temperature, "n_train": len(train.features),
               "n_test": len(test.features)}
    if train.multilabel:
        m, aps = mean_average_precision(scores, voc_labels(test.targets, test.difficult))
        details["per_class_ap"] = dict(zip(test.classes, aps.tolist()))
        return {"metric": "mAP", "value": m, "details": details}
    details["top5"] = topk_accuracy(scores, test.targets, 5)
    return {"metric": "top1", "value": topk_accuracy(scores, test.targets, 1), "details": details}


@PROTOCOLS.register("knn")
def run_knn(ctx) -> dict:
    name, root = ctx.primary()
    train, test = ctx.pair(name, root)
    res = knn_protocol(train, test, k=int(ctx.get("knn_k")), temperature=float(ctx.get("knn_t")),
                       query_chunk=int(ctx.get("knn_query_chunk")), bank_chunk=int(ctx.get("knn_bank_chunk")))
    return dict(res, **ctx.source(name, root, train, test))
