"""Matplotlib without a display, and the one way figures are written: laid out, PNG, atomically."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers, CI or boards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: os.PathLike | str, dpi: float | str = 110) -> Path:
    """Write `fig` as PNG so a reader never sees half a file, then release it."""
    import matplotlib.pyplot as plt

    from .utils import atomic_path  # imports torch: only when a figure is written

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
