"""VOC07 linear-SVM protocol (Goyal et al. 2019) and its low-shot variant.

Features are L2-normalised; one LinearSVC (LIBLINEAR) per class, one-vs-rest, with
class_weight {1: 2, -1: 1}, squared hinge, dual, max_iter 2000. The cost of each class comes
from a sweep scored by cross-validated AP on trainval. "Difficult" images count as negatives
in training and are ignored when AP is measured. Classes run in parallel with joblib.

The data is chosen by `context.svm_dataset`: the run's own dataset (single-label data runs one-vs-rest
over its classes, "difficult" does not apply), VOC2007 when eval.voc_root is set, shapes-multilabel for
runs on generated data. Each split holds at most eval.svm_max_train / eval.svm_max_test images (a
seeded, class-stratified subsample), which bounds the SVM time on CIFAR- or ImageNet-sized sets.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from ..errors import UserError
from .features import Features
from .metrics import average_precision, mean_average_precision, one_hot_labels, voc_labels
from .registry import PROTOCOLS


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Unit-norm rows in float64, the dtype LIBLINEAR works in (no conversion copy in every fit)."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)


def protocol_labels(feats: Features) -> np.ndarray:
    """{1, -1, 0} labels (N, C) for multi-label data, {1, -1} one-vs-rest labels for single-label data."""
    if feats.multilabel:
        return voc_labels(feats.targets, feats.difficult)
    return one_hot_labels(feats.targets, feats.num_classes)


def make_svc(cost: float, seed: int) -> LinearSVC:
    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, penalty="l2", loss="squared_hinge", dual=True,
                     max_iter=2000, random_state=seed)


def _fit(x, y_pm1, cost, seed):
    # n_iter_ instead of catching ConvergenceWarning: warning filters are process-global, not thread-safe
    clf = make_svc(cost, seed).fit(x, y_pm1)
    return clf, int(np.max(clf.n_iter_) >= clf.max_iter)


def run_parallel(n_jobs: int, calls) -> list:
    """Run delayed calls in worker processes, not threads: LIBLINEAR's dual solver shuffles with one
    process-wide generator (sklearn's newrand), which each fit seeds, so fits on parallel threads
    draw from each other's streams and the scores change from run to run. Features are shared with
    the workers by memory-mapping. Non-convergence is counted per fit and reported, so the warning
    itself is silenced here (in every worker)."""
    calls = [delayed(_quiet)(fn, args, kwargs) for fn, args, kwargs in calls]
    return Parallel(n_jobs=n_jobs, prefer="processes")(calls)


def _quiet(fn, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def fit_class(x: np.ndarray, labels: np.ndarray, rows: Optional[np.ndarray], costs: Sequence[float],
              folds: int = 3, seed: int = 0, default_cost: float = 1.0) -> dict:
    """Cost sweep by cross-validated AP, then a final fit on all given rows, for one class.

    `labels` are {1, -1, 0} for the rows used; 0 trains as negative and is ignored by AP.
    With fewer positives than 2 no cross-validation is possible and `default_cost` is used.
    """
    if rows is not None:
        x, labels = x[rows], labels[rows]
    x = np.asarray(x, dtype=np.float64)
    y = np.where(labels == 1, 1, -1)
    n_pos, n_neg = int((y == 1).sum()), int((y == -1).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"an SVM needs positives and negatives, got {n_pos} positives and {n_neg} negatives")
    n_splits = min(folds, n_pos, n_neg)
    cv_ap, not_conv = {}, 0
    if n_splits >= 2 and len(costs) > 1:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for cost in costs:
            aps = []
            for tr, va in splitter.split(x, y):
                clf, nc = _fit(x[tr], y[tr], cost, seed)
                not_conv += nc
                aps.append(average_precision(clf.decision_function(x[va]), labels[va]))
            cv_ap[float(cost)] = float(np.nanmean(aps)) if not np.isnan(aps).all() else float("nan")
        finite = {c: a for c, a in cv_ap.items() if np.isfinite(a)}
        best = max(finite, key=lambda c: (finite[c], -c)) if finite else float(default_cost)
    else:
        best = float(costs[0]) if len(costs) == 1 else float(default_cost)
    final = fit_single(x, labels, None, best, seed)
    return dict(final, cv_ap=cv_ap, not_converged=not_conv + final["not_converged"])


def fit_single(x: np.ndarray, labels: np.ndarray, rows: Optional[np.ndarray], cost: float, seed: int = 0) -> dict:
    """One SVM at a fixed cost; `labels` in {1, -1, 0}, 0 trains as negative."""
    if rows is not None:
        x, labels = x[rows], labels[rows]
    y = np.where(labels == 1, 1, -1)
    clf, nc = _fit(np.asarray(x, dtype=np.float64), y, cost, seed)
    return {"cost": float(cost), "coef": clf.coef_.ravel(), "intercept": float(clf.intercept_[0]),
            "not_converged": nc, "n_pos": int((y == 1).sum()), "n_neg": int((y == -1).sum())}


def _scores(models: list, x: np.ndarray) -> np.ndarray:
    w = np.stack([m["coef"] for m in models], 1)
    b = np.array([m["intercept"] for m in models], dtype=np.float64)
    return x @ w + b


def usable_classes(labels: np.ndarray, classes) -> tuple:
    """Classes with at least one positive and one negative training image, and why others are skipped."""
    valid, skipped = [], {}
    for c, name in enumerate(classes):
        n_pos = int((labels[:, c] == 1).sum())
        if n_pos == 0 or n_pos == len(labels):
            skipped[name] = "no positive training image" if n_pos == 0 else "no negative training image"
        else:
            valid.append(c)
    if not valid:
        raise UserError("no class has both positive and negative training images; the SVM protocol cannot run "
                        "on this dataset (check its labels)")
    if skipped:
        warnings.warn(f"SVM: skipping {len(skipped)} class(es) without positives/negatives: {', '.join(list(skipped)[:5])}")
    return valid, skipped


def _check_costs(costs) -> list:
    costs = [float(c) for c in costs]
    if not costs or any(c <= 0 for c in costs):
        raise UserError(f"eval.svm_costs must be a non-empty list of positive numbers, got {costs}")
    return costs


def svm_protocol(train: Features, test: Features, costs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 3,
                 seed: int = 0, n_jobs: int = -1, default_cost: float = 1.0) -> dict:
    """VOC07 SVM: per-class cost by 3-fold AP on trainval, test AP per class, mAP (and accuracy if single-label)."""
    costs = _check_costs(costs)
    x_tr, x_te = l2_normalise(train.features), l2_normalise(test.features)
    lab_tr, lab_te = protocol_labels(train), protocol_labels(test)
    valid, skipped = usable_classes(lab_tr, train.classes)
    models = run_parallel(n_jobs, (delayed(fit_class)(x_tr, lab_tr[:, c], None, costs, folds, seed, default_cost)
                                   for c in valid))
    scores = _scores(models, x_te)
    m, aps = mean_average_precision(scores, lab_te[:, valid])
    names = [train.classes[c] for c in valid]
    details = {
        "costs_swept": costs, "folds": folds, "n_train": len(x_tr), "n_test": len(x_te),
        "per_class_ap": dict(zip(names, aps.tolist())),
        "per_class_cost": dict(zip(names, [mo["cost"] for mo in models])),
        "not_converged_fits": int(sum(mo["not_converged"] for mo in models)),
        "skipped_classes": skipped,
    }
    if not test.multilabel:
        pred = np.asarray(valid)[scores.argmax(1)]
        details["accuracy"] = float((pred == np.asarray(test.targets)).mean())
    return {"metric": "mAP", "value": m, "details": details}


@PROTOCOLS.register("svm")
def run_svm(ctx) -> dict:
    name, root, train, test = ctx.svm_pair()  # dataset chosen by context.svm_dataset, capped per split
    res = svm_protocol(train, test, costs=ctx.get("svm_costs"),
                       folds=int(ctx.get("svm_folds")), seed=ctx.seed, n_jobs=ctx.jobs,
                       default_cost=float(ctx.get("svm_default_cost")))
    res["details"]["max_images"] = dict(zip(("train", "test"), ctx.svm_caps()))  # 0: no cap
    return dict(res, **ctx.source(name, root, train, test))
