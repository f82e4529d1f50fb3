"""What a resumable checkpoint holds besides weights: every RNG stream of every rank, the world size,
and the config it must be resumed with."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from ..errors import UserError
from . import distributed as D


def rng_state() -> Dict[str, Any]:
    """This process's torch, Python, numpy and CUDA generators, in types torch.load(weights_only) reads."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(py[1]), "python_gauss": py[2],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Any) -> None:
    """Restore rng_state(); also reads the older forms (a bare torch state, no numpy entry)."""
    if torch.is_tensor(state):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states() -> List[Dict[str, Any]]:
    """Every rank's rng_state(), in rank order (a collective: call it on every rank)."""
    return D.all_gather_object(rng_state())


def restore_rank_rng(states: Any) -> None:
    """Set this rank's streams from all_rng_states() (or an older single state)."""
    if isinstance(states, list):
        set_rng_state(states[D.rank()])
    else:
        set_rng_state(states)


def check_world(path: Path, saved_world: Optional[int], world: int) -> None:
    saved = int(saved_world or 1)
    if saved != world:
        raise UserError(f"--resume: {path} was written by {saved} process{'es' if saved > 1 else ''} but this run has "
                        f"{world}; resume with torchrun --nproc_per_node {saved}"
                        + (" (or without torchrun)" if saved == 1 else "") + ", or start over with --force")


def changed_keys(saved: Dict[str, Any], now: Dict[str, Any], limit: int = 3) -> str:
    """' (key: old in the checkpoint, new now; ...)' for the keys whose values differ."""
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if not keys:
        return ""
    parts = [f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in keys[:limit]]
    return " (" + "; ".join(parts) + (f"; {len(keys) - limit} more" if len(keys) > limit else "") + ")"


def config_mismatch(saved: Dict[str, Any], cfg: Dict[str, Any], sections: Iterable[str],
                    ignore: Dict[str, Iterable[str]] = {}) -> Optional[str]:
    """'[section] config (what changed)' for the first of `sections` (or run.seed) whose values differ
    between a checkpoint's config and cfg; None when they match.

    Keys a section gained since the checkpoint was written compare at their defaults."""
    from ..config import SECTIONS, defaults

    for name in sections:
        skip = set(ignore.get(name, ())) | {"workers"}
        a = {k: v for k, v in {**defaults(SECTIONS.get(name, {})), **(saved.get(name) or {})}.items() if k not in skip}
        b = {k: v for k, v in {**defaults(SECTIONS.get(name, {})), **(cfg.get(name) or {})}.items() if k not in skip}
        if a != b:
            return f"[{name}] config{changed_keys(a, b)}"
    a, b = saved.get("run", {}).get("seed"), cfg.get("run", {}).get("seed")
    if a != b:
        return f"run.seed ({a!r} in the checkpoint, {b!r} now)"
    return None


def train_seconds(history: List[Dict[str, Any]]) -> float:
    """Training time of a run from its epoch records: a resumed run's own clock sees only its last
    invocation, but every epoch in the checkpoint's history carries the seconds it took."""
    return round(sum(float(h.get("seconds", 0.0)) for h in history), 2)
