"""Training plots: per-part gradient norms (the paper's Fig. 2) and the loss terms per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..plotting import pyplot, save_figure

_LABELS = {
    "grad_classifier": "classifier g (FP, on teacher features)",
    "grad_features": "feature extractor k (binary student)",
    "grad_student_classifier": "student classifier l",
    "grad_projector": "feature projector",
}


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(y) < k:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def plot_grad_norms(steps: List[Dict[str, Any]], path, title: str = "gradient norms") -> Optional[Path]:
    """Gradient L2 norm of each part per iteration, log scale, stage boundaries marked."""
    keys = [k for k in (steps[0] if steps else {}) if k.startswith("grad_")]
    if not keys:
        return None
    plt = pyplot()

    x = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(7, 4))
    k = max(1, len(steps) // 50)
    for key in keys:
        y = np.array([max(r.get(key, 0.0), 1e-12) for r in steps])
        ys = _smooth(y, k)
        ax.plot(x[len(x) - len(ys):], ys, label=_LABELS.get(key, key[5:]))
    for i in range(1, len(steps)):
        if steps[i]["stage"] != steps[i - 1]["stage"]:
            ax.axvline(i, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("logged iteration")
    ax.set_ylabel("gradient L2 norm")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_losses(history: List[Dict[str, Any]], path, title: str = "losses") -> Optional[Path]:
    """Loss, KL and L_FS per epoch (both stages on one axis)."""
    if not history:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(history) + 1)
    for key in ("loss", "kl", "fs"):
        if key in history[0]:
            ax.plot(x, [h[key] for h in history], marker="o", ms=3, label=key)
    if "lambda" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(x, [h["lambda"] for h in history], color="black", ls=":", label="λ")
        ax2.set_ylabel("λ (weight of L_FS)")
    ax.set_xlabel("epoch (stages concatenated)")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
