"""The larq environment: its own venv, because larq pins numpy<2 and TensorFlow beside torch is heavy.

Default location: `.larq-venv` at the repository root (git-ignored; the kernels' LCE benchmark
uses the same one), or the folder in $BSSL_LARQ_VENV. Create it with
    python -m bssl.export.larq_env create        (or the pip command in CREATE_HELP)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ..errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["larq", "larq-compute-engine", "tensorflow-cpu", "tf-keras~=2.21.0"]
CREATE_HELP = ("python -m venv .larq-venv && .larq-venv/bin/pip install larq larq-compute-engine tensorflow-cpu "
               "\"tf-keras~=2.21.0\"  (or: python -m bssl.export.larq_env create)")
ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def default_venv() -> Path:
    if os.environ.get("BSSL_LARQ_VENV"):
        return Path(os.environ["BSSL_LARQ_VENV"])
    return REPO_ROOT / ".larq-venv"


def find_larq_python(path: Optional[os.PathLike] = None) -> Optional[Path]:
    """The larq python if it exists (no import check), else None."""
    if path:
        return Path(path) if Path(path).is_file() else None
    for venv in (default_venv(), Path.cwd() / ".larq-venv"):
        if (venv / "bin" / "python").is_file():
            return venv / "bin" / "python"
    return None


def larq_python(path: Optional[os.PathLike] = None) -> Path:
    """The python of the larq environment; UserError telling how to create it when missing."""
    py = find_larq_python(path)
    if py is None:
        where = Path(path) if path else default_venv() / "bin" / "python"
        raise UserError(f"the larq environment is missing ({where} not found); the lce format needs it: {CREATE_HELP}")
    return py


def run_larq(py: Path, args, timeout: float = 900.0) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    return subprocess.run([str(py), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def create(venv: Optional[Path] = None) -> Path:
    """Create the venv and install larq, LCE, tensorflow-cpu and tf-keras into it."""
    venv = Path(venv) if venv else default_venv()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PACKAGES], check=True)
    return venv / "bin" / "python"


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bssl.export.larq_env", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["create", "check"])
    ap.add_argument("--venv", type=Path, default=None, help=f"default {default_venv()}")
    args = ap.parse_args(argv)
    if args.action == "create":
        print(create(args.venv))
        return 0
    py = larq_python(args.venv / "bin" / "python" if args.venv else None)
    res = run_larq(py, ["-c", "import larq, larq_compute_engine, tensorflow as tf; print(tf.__version__)"])
    print(res.stdout.strip() or res.stderr.strip().splitlines()[-1])
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
