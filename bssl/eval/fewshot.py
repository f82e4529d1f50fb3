"""Low-shot VOC07 SVMs (Goyal et al. 2019; BSSL paper Table 3): k positives per class.

For each k and each of `samples` seeded draws, every class gets k random positives and all its
negatives (capped at `max_negatives`); the SVM machinery of svm.py (cost by cross-validated AP,
min(3, k) folds; k=1 uses `default_cost`) is trained and mAP measured on the full test set.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from joblib import Parallel, delayed

from ..errors import UserError
from .features import Features
from .metrics import mean_average_precision
from .svm import _check_costs, _scores, fit_class, l2_normalise, protocol_labels
from .registry import PROTOCOLS


def fewshot_protocol(train: Features, test: Features, ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 96),
                     samples: int = 5, costs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), max_negatives: int = 19000,
                     folds: int = 3, seed: int = 0, n_jobs: int = -1, default_cost: float = 1.0) -> dict:
    """Low-shot SVM: k positives per class, all negatives (capped), `samples` seeded draws; mean ± std of mAP per k.

    A k larger than some class's positives is skipped and listed under `skipped` with the reason.
    """
    costs = _check_costs(costs)
    if samples < 1:
        raise UserError(f"eval.fewshot_samples must be >= 1, got {samples}")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"eval.fewshot_k must be a non-empty list of positive integers, got {ks}")
    x_tr, x_te = l2_normalise(train.features), l2_normalise(test.features)
    lab_tr, lab_te = protocol_labels(train), protocol_labels(test)
    n_pos = (lab_tr == 1).sum(0)
    skipped, tasks = {}, []
    for k in ks:
        short = [f"{train.classes[c]!r} has {int(n_pos[c])}" for c in range(train.num_classes) if n_pos[c] < k]
        if short:
            skipped[k] = f"k={k} skipped: fewer than {k} positives ({', '.join(short[:3])}{', ...' if len(short) > 3 else ''})"
            warnings.warn(skipped[k])
            continue
        for s in range(samples):
            rng = np.random.default_rng([seed, k, s])
            for c in range(train.num_classes):
                pos = rng.choice(np.flatnonzero(lab_tr[:, c] == 1), size=k, replace=False)
                neg = np.flatnonzero(lab_tr[:, c] != 1)
                if len(neg) > max_negatives:
                    neg = rng.choice(neg, size=max_negatives, replace=False)
                tasks.append((k, s, c, np.sort(np.concatenate([pos, neg]))))
    if not tasks:
        raise UserError(f"few-shot: every k in {ks} exceeds the positives of some class "
                        f"(fewest positives: {int(n_pos.min())}); choose smaller eval.fewshot_k")
    fits = Parallel(n_jobs=n_jobs)(
        delayed(fit_class)(x_tr, lab_tr[:, c], rows, costs, folds, seed + s, default_cost) for k, s, c, rows in tasks)
    per_k = {}
    by_draw = {}
    for (k, s, c, _), model in zip(tasks, fits):
        by_draw.setdefault((k, s), [None] * train.num_classes)[c] = model
    for (k, s), models in sorted(by_draw.items()):
        scores = _scores(models, x_te)
        m, _ = mean_average_precision(scores, lab_te)
        entry = per_k.setdefault(k, {"mAP": [], "accuracy": []})
        entry["mAP"].append(m)
        if not test.multilabel:
            entry["accuracy"].append(float((scores.argmax(1) == np.asarray(test.targets)).mean()))
    table = {}
    for k, entry in per_k.items():
        row = {"mAP_mean": float(np.mean(entry["mAP"])), "mAP_std": float(np.std(entry["mAP"])),
               "mAP_samples": entry["mAP"]}
        if entry["accuracy"]:
            row.update(accuracy_mean=float(np.mean(entry["accuracy"])), accuracy_std=float(np.std(entry["accuracy"])))
        table[str(k)] = row
    largest = str(max(per_k))
    details = {"per_k": table, "samples": samples, "costs_swept": costs, "max_negatives": max_negatives,
               "skipped": {str(k): v for k, v in skipped.items()},
               "not_converged_fits": int(sum(f["not_converged"] for f in fits)), "n_test": len(x_te)}
    return {"metric": f"mAP@k={largest}", "value": table[largest]["mAP_mean"], "details": details}


@PROTOCOLS.register("fewshot")
def run_fewshot(ctx) -> dict:
    name, root = ctx.multilabel_source()
    train, test = ctx.pair(name, root, prefix="multilabel_")
    res = fewshot_protocol(train, test, ks=ctx.get("fewshot_k", (1, 2, 4, 8, 16, 32, 64, 96)),
                           samples=int(ctx.get("fewshot_samples", 5)), costs=ctx.get("svm_costs", (0.01, 0.1, 1.0, 10.0)),
                           max_negatives=int(ctx.get("fewshot_max_negatives", 19000)),
                           folds=int(ctx.get("svm_folds", 3)), seed=ctx.seed, n_jobs=ctx.jobs,
                           default_cost=float(ctx.get("svm_default_cost", 1.0)))
    return dict(res, dataset=ctx.describe(name, root))
