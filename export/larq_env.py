"""The larq environment: its own venv, because larq pins numpy<2 and TensorFlow beside torch is heavy.

Where it is looked for, first match wins:
  1. $BSSL_LARQ_PYTHON, the python of a larq environment, or $BSSL_LARQ_VENV, its folder
     (when either is set, nothing else is tried: an explicit choice that is wrong is an error);
  2. `.larq-venv` in the current working directory;
  3. `.larq-venv` at the root of the source checkout, when bssl runs from one (editable install);
     an installed wheel has no checkout.
Create it with
    python -m bssl.export.larq_env create [--venv DIR]     (or the pip command in CREATE_HELP)
which makes the first of $BSSL_LARQ_VENV, <checkout>/.larq-venv, ./.larq-venv that applies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import UserError

PYTHON_VAR = "BSSL_LARQ_PYTHON"
VENV_VAR = "BSSL_LARQ_VENV"
VENV_NAME = ".larq-venv"
PACKAGES = ["larq", "larq-compute-engine", "tensorflow-cpu", "tf-keras~=2.21.0"]
CREATE_HELP = ("python -m venv .larq-venv && .larq-venv/bin/pip install larq larq-compute-engine tensorflow-cpu "
               "\"tf-keras~=2.21.0\"  (or: python -m bssl.export.larq_env create)")
ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def source_checkout() -> Optional[Path]:
    """Root of the bssl source checkout this module runs from; None for an installed copy.

    In a checkout this file is <root>/export/larq_env.py beside <root>/pyproject.toml and
    <root>/bssl/; installed it is <site-packages>/bssl/export/larq_env.py, where neither exists.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        project = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    if (root / "bssl" / "__init__.py").is_file() and re.search(r'^name\s*=\s*"bssl"\s*$', project, re.M):
        return root
    return None


def venv_python(venv: os.PathLike | str) -> Path:
    venv = Path(venv)
    return venv / "Scripts" / "python.exe" if os.name == "nt" else venv / "bin" / "python"


def candidates() -> List[Tuple[str, Path]]:
    """(where it came from, python path) in lookup order."""
    if os.environ.get(PYTHON_VAR):
        return [(f"${PYTHON_VAR}", Path(os.environ[PYTHON_VAR]))]
    if os.environ.get(VENV_VAR):
        return [(f"${VENV_VAR}", venv_python(os.environ[VENV_VAR]))]
    out = [("current directory", venv_python(Path.cwd() / VENV_NAME))]
    root = source_checkout()
    if root is not None and root / VENV_NAME != Path.cwd() / VENV_NAME:
        out.append(("source checkout", venv_python(root / VENV_NAME)))
    return out


def default_venv() -> Path:
    """Where `create` puts the environment."""
    if os.environ.get(VENV_VAR):
        return Path(os.environ[VENV_VAR])
    root = source_checkout()
    return (root if root is not None else Path.cwd()) / VENV_NAME


def find_larq_python(path: Optional[os.PathLike] = None) -> Optional[Path]:
    """The larq python if it exists (no import check), else None."""
    if path:
        return Path(path) if Path(path).is_file() else None
    for _, py in candidates():
        if py.is_file():
            return py
    return None


def missing_message(path: Optional[os.PathLike] = None) -> str:
    """One line: what was looked for, how to create the environment, which variable to set."""
    looked = str(path) if path else ", ".join(f"{py} ({why})" for why, py in candidates())
    return (f"the larq environment is missing (looked for {looked}); LCE needs it. Create it with: {CREATE_HELP}; "
            f"or point ${VENV_VAR} at an existing one (${PYTHON_VAR} at its python)")


def larq_python(path: Optional[os.PathLike] = None) -> Path:
    """The python of the larq environment; UserError telling how to create it when missing."""
    py = find_larq_python(path)
    if py is None:
        raise UserError(missing_message(path))
    return py


def run_larq(py: Path, args, timeout: float = 900.0) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    return subprocess.run([str(py), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def create(venv: Optional[Path] = None) -> Path:
    """Create the venv and install larq, LCE, tensorflow-cpu and tf-keras into it."""
    venv = Path(venv) if venv else default_venv()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv_python(venv)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return py


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bssl.export.larq_env", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["create", "check", "where"],
                    help="create the environment, check that larq imports in it, or print its python")
    ap.add_argument("--venv", type=Path, default=None, help=f"default {default_venv()}")
    args = ap.parse_args(argv)
    if args.action == "create":
        print(create(args.venv))
        return 0
    try:
        py = larq_python(venv_python(args.venv) if args.venv else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.action == "where":
        print(py)
        return 0
    res = run_larq(py, ["-c", "import larq, larq_compute_engine, tensorflow as tf; print(tf.__version__)"])
    print(res.stdout.strip() or (res.stderr.strip().splitlines() or ["no output"])[-1])
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
