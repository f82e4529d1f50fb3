"""Small shared helpers: seeding, atomic writes, checkpoints, JSON logs, device choice."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from . import __version__
from .errors import UserError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode == 0 and rev.stdout.strip():
            return f"{__version__}+g{rev.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


@contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 honours the umask; mkstemp would leave every report and model at mode 0600
    tmp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def hash_tensors(items, h=None) -> "hashlib._Hash":
    """Feed (name, tensor) pairs into a sha256 (a new one unless `h` is given): one content hash for weights."""
    h = h if h is not None else hashlib.sha256()
    for name, tensor in items:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h


def replace_section(path: os.PathLike | str, begin: str, end: str, text: str) -> None:
    """Put text between the begin and end marker lines of a document, keeping everything else (generated
    tables inside hand-written pages)."""
    path = Path(path)
    page = path.read_text()
    if begin not in page or end not in page:
        raise UserError(f"{path} has no {begin} ... {end} section to replace; add the two marker lines where the "
                        "table belongs")
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(f"{head}{begin}\n{text}{end}{tail}")


def write_json(path: os.PathLike | str, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_checkpoint(path: os.PathLike | str, kind: str, state: Dict[str, Any], config: Dict[str, Any]) -> None:
    """Save a checkpoint atomically. Every checkpoint carries its kind, config and code version."""
    payload = {"bssl_kind": kind, "bssl_version": code_version(), "config": config, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: os.PathLike | str, expect_kind: Optional[str | tuple] = None) -> Dict[str, Any]:
    """Load a bssl checkpoint with weights_only=True; raise UserError on wrong file or kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the path of a .pt file written by bssl")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise UserError(f"checkpoint {path} could not be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or "bssl_kind" not in ckpt:
        raise UserError(f"checkpoint {path} is not a bssl checkpoint (no 'bssl_kind' entry)")
    if expect_kind is not None:
        kinds = (expect_kind,) if isinstance(expect_kind, str) else tuple(expect_kind)
        if ckpt["bssl_kind"] not in kinds:
            raise UserError(
                f"checkpoint {path} holds a {ckpt['bssl_kind']!r}, but a {' or '.join(kinds)} checkpoint is needed here"
            )
    return ckpt


class JsonlLogger:
    """Append-only JSON-lines log written beside a checkpoint."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **record: Any) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")

    def read(self) -> list:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
