"""Low-shot VOC07 SVMs (Goyal et al. 2019; BSSL paper Table 3): k positives per class.

For each k and each of `samples` seeded draws, every class gets k random positives and all its
negatives (capped at `max_negatives`), and the SVM machinery of svm.py is trained; mAP is
measured on the full test set and reported as mean ± std over the draws. The data is the SVM
protocol's (`context.svm_dataset`, capped the same way); on single-label data "positives" are a
class's images and every other image is a negative.

How the SVM cost is chosen (`cost_selection`):
- "test" (default): as the reference code of Goyal et al. (train_svm_low_shot / test_svm_low_shot),
  SVMs are trained for every cost of the sweep and, per k, the cost with the best mean test mAP
  is reported (every cost's numbers are kept in the details).
- "full": each class uses the cost picked by 3-fold cross-validated AP on the whole trainval set.
- "cv": cross-validation inside every draw (min(3, k) folds; k=1 uses `default_cost`); the most
  principled and about (folds x costs) times slower.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from joblib import delayed

from ..errors import UserError
from .features import Features
from .metrics import mean_average_precision
from .registry import PROTOCOLS
from .svm import (_check_costs, _scores, fit_class, fit_single, l2_normalise, protocol_labels, run_parallel,
                  usable_classes)

SELECTIONS = ("test", "full", "cv")


def draw_tasks(lab_tr: np.ndarray, valid: list, ks: Sequence[int], samples: int, max_negatives: int, seed: int,
               classes) -> tuple:
    """(k, sample, class, rows) for every draw, and the k values skipped for lack of positives."""
    n_pos = (lab_tr == 1).sum(0)
    skipped, tasks = {}, []
    for k in ks:
        short = [f"{classes[c]!r} has {int(n_pos[c])}" for c in valid if n_pos[c] < k]
        if short:
            skipped[k] = f"fewer than {k} positives ({', '.join(short[:3])}{', ...' if len(short) > 3 else ''})"
            warnings.warn(f"few-shot k={k} skipped: {skipped[k]}")
            continue
        for s in range(samples):
            rng = np.random.default_rng([seed, k, s])
            for c in valid:
                pos = rng.choice(np.flatnonzero(lab_tr[:, c] == 1), size=k, replace=False)
                neg = np.flatnonzero(lab_tr[:, c] != 1)
                if len(neg) > max_negatives:
                    neg = rng.choice(neg, size=max_negatives, replace=False)
                tasks.append((k, s, c, np.sort(np.concatenate([pos, neg]))))
    return tasks, skipped


def fewshot_protocol(train: Features, test: Features, ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 96),
                     samples: int = 5, costs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), max_negatives: int = 19000,
                     folds: int = 3, seed: int = 0, n_jobs: int = -1, default_cost: float = 1.0,
                     cost_selection: str = "test") -> dict:
    """Low-shot SVM: mean ± std of test mAP over `samples` draws for each k (skipping k above some class's positives)."""
    costs = _check_costs(costs)
    if cost_selection not in SELECTIONS:
        raise UserError(f"eval.fewshot_cost_selection {cost_selection!r} is unknown; use one of {', '.join(SELECTIONS)}")
    if samples < 1:
        raise UserError(f"eval.fewshot_samples must be >= 1, got {samples}")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"eval.fewshot_k must be a non-empty list of positive integers, got {ks}")
    x_tr, x_te = l2_normalise(train.features), l2_normalise(test.features)
    lab_tr, lab_te = protocol_labels(train), protocol_labels(test)
    valid, skipped_classes = usable_classes(lab_tr, train.classes)
    tasks, skipped = draw_tasks(lab_tr, valid, ks, samples, max_negatives, seed, train.classes)
    if not tasks:
        n_pos = (lab_tr == 1).sum(0)
        raise UserError(f"few-shot: every k in {ks} exceeds the positives of some class "
                        f"(fewest positives: {int(n_pos[valid].min())}); choose smaller eval.fewshot_k")
    def par(calls):
        return run_parallel(n_jobs, calls)

    if cost_selection == "test":
        jobs = [(t, cost) for t in tasks for cost in costs]
        fits = par(delayed(fit_single)(x_tr, lab_tr[:, t[2]], t[3], cost, seed + t[1]) for t, cost in jobs)
        keyed = [((t[0], t[1], cost), t[2], f) for (t, cost), f in zip(jobs, fits)]
    else:
        if cost_selection == "full":
            sweep = par(delayed(fit_class)(x_tr, lab_tr[:, c], None, costs, folds, seed, default_cost) for c in valid)
            class_cost = {c: m["cost"] for c, m in zip(valid, sweep)}
            fits = par(delayed(fit_single)(x_tr, lab_tr[:, c], rows, class_cost[c], seed + s) for k, s, c, rows in tasks)
        else:
            fits = par(delayed(fit_class)(x_tr, lab_tr[:, c], rows, costs, folds, seed + s, default_cost)
                       for k, s, c, rows in tasks)
        keyed = [((k, s, None), c, f) for (k, s, c, _), f in zip(tasks, fits)]
    column = {c: i for i, c in enumerate(valid)}
    by_draw: dict = {}
    for key, c, model in keyed:
        by_draw.setdefault(key, [None] * len(valid))[column[c]] = model
    # results[k][cost] = list over samples of (mAP, accuracy)
    results: dict = {}
    for (k, s, cost), models in sorted(by_draw.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        scores = _scores(models, x_te)
        m, _ = mean_average_precision(scores, lab_te[:, valid])
        acc = None
        if not test.multilabel:
            acc = float((np.asarray(valid)[scores.argmax(1)] == np.asarray(test.targets)).mean())
        results.setdefault(k, {}).setdefault(cost, []).append((m, acc))
    table = {}
    for k, per_cost in results.items():
        best_cost = max(per_cost, key=lambda c: np.mean([v[0] for v in per_cost[c]]))
        maps = [v[0] for v in per_cost[best_cost]]
        row = {"mAP_mean": float(np.mean(maps)), "mAP_std": float(np.std(maps)), "mAP_samples": maps}
        if cost_selection == "test":
            row["cost"] = best_cost
            row["mAP_mean_per_cost"] = {str(c): float(np.mean([v[0] for v in vals])) for c, vals in per_cost.items()}
        if not test.multilabel:
            accs = [v[1] for v in per_cost[best_cost]]
            row.update(accuracy_mean=float(np.mean(accs)), accuracy_std=float(np.std(accs)))
        table[str(k)] = row
    largest = str(max(results))
    details = {"per_k": table, "samples": samples, "costs_swept": costs, "cost_selection": cost_selection,
               "max_negatives": max_negatives, "skipped": {str(k): v for k, v in skipped.items()},
               "skipped_classes": skipped_classes, "not_converged_fits": int(sum(f["not_converged"] for f in fits)),
               "n_test": len(x_te)}
    return {"metric": f"mAP@k={largest}", "value": table[largest]["mAP_mean"], "details": details}


@PROTOCOLS.register("fewshot")
def run_fewshot(ctx) -> dict:
    name, root, train, test = ctx.svm_pair()  # the SVM protocol's dataset and caps
    res = fewshot_protocol(train, test, ks=ctx.get("fewshot_k"),
                           samples=int(ctx.get("fewshot_samples")),
                           costs=ctx.get("fewshot_costs") or ctx.get("svm_costs"),
                           max_negatives=int(ctx.get("fewshot_max_negatives")),
                           folds=int(ctx.get("svm_folds")), seed=ctx.seed, n_jobs=ctx.jobs,
                           default_cost=float(ctx.get("svm_default_cost")),
                           cost_selection=str(ctx.get("fewshot_cost_selection")))
    res["details"]["max_images"] = dict(zip(("train", "test"), ctx.svm_caps()))  # 0: no cap
    return dict(res, **ctx.source(name, root, train, test))
