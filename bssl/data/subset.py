"""Seeded, class-stratified subsets of a dataset that keep the attributes the rest of bssl reads.

`data.train_subset` trains on a part of a large training set at CPU budgets, and the SVM protocols cap
their splits (eval.svm_max_train / svm_max_test) with the same draw, so a subset is the same images
wherever it is asked for with the same size and seed.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
from torch.utils.data import Dataset


def dataset_labels(ds) -> Optional[np.ndarray]:
    """Labels of a dataset without decoding its images (int (N,) or multi-hot (N, C)); None if it keeps none."""
    for attr in ("targets", "labels"):
        lab = getattr(ds, attr, None)
        if lab is not None and len(lab) == len(ds):
            return np.asarray(lab)
    return None


def stratified_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` rows drawn without replacement, seeded; single-label rows keep each class's
    share (largest remainder, and at least one image of every class when n allows); multi-label rows
    are drawn uniformly."""
    labels = np.asarray(labels)
    total = len(labels)
    rng = np.random.default_rng([seed, total, n])
    if n >= total:
        return np.arange(total)
    if labels.ndim != 1:
        return np.sort(rng.choice(total, size=n, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / total
    take = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - take), kind="stable")
    take[order[:n - int(take.sum())]] += 1
    if n >= len(classes):  # every class keeps a positive for its one-vs-rest SVM
        for c in np.flatnonzero(take == 0):
            donor = int(np.argmax(take))
            take[donor] -= 1
            take[c] += 1
    rows = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(rows))


class RowSubset(Dataset):
    """The rows `rows` of a dataset, with the attributes feature extraction reads (classes, difficult, ...)."""

    def __init__(self, base, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        labels = dataset_labels(base)
        if labels is not None:
            self.targets = labels[self.rows].tolist() if labels.ndim == 1 else labels[self.rows]
        self.classes = list(base.classes)
        self.num_classes = len(self.classes)
        self.multilabel = bool(getattr(base, "multilabel", False))
        diff = getattr(base, "difficult", None)
        self.difficult = None if diff is None else np.asarray(diff)[self.rows]
        rows_hash = hashlib.sha256(self.rows.tobytes()).hexdigest()[:16]
        self.fingerprint = f"{getattr(base, 'fingerprint', None)}:rows={rows_hash}"

    @property
    def transform(self):
        return self.base.transform

    @transform.setter
    def transform(self, value):
        self.base.transform = value

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int):
        return self.base[int(self.rows[idx])]

    def __getattr__(self, name: str):
        # anything else (split, heldout, ...) as the base dataset has it; never recurse while unpickling
        if name in ("base", "rows") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)
