"""Larq Compute Engine (the reference BNN engine) on this CPU, in its own virtual environment.

LCE needs TensorFlow and numpy<2, so it lives in its own environment, found by
bssl.export.larq_env (BSSL_LARQ_PYTHON / BSSL_LARQ_VENV, ./.larq-venv, the checkout's .larq-venv);
the worker runs with that environment's Python. On x86 LCE
runs its portable kernels (it is tuned for ARM), which is exactly the comparison asked for.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef, student_names

VENV_HELP = ("create it with `python -m bssl.export.larq_env create`, or point BSSL_LARQ_VENV (its folder) or "
             "BSSL_LARQ_PYTHON (its python) at one")


def venv_python() -> Optional[Path]:
    from ...export.larq_env import find_larq_python

    return find_larq_python()


@BACKENDS.register("lce")
class LCE(Backend):
    name = "lce"
    description = "Larq Compute Engine (TFLite), .larq-venv"
    install_hint = VENV_HELP
    file_kinds = ("tflite",)
    _checked: Optional[str] = None

    def availability(self) -> Optional[str]:
        py = venv_python()
        if py is None:
            return f"no .larq-venv found; {VENV_HELP}"
        if self._checked is None:
            probe = subprocess.run([str(py), "-c", "import larq_compute_engine.tflite.python.interpreter"],
                                   capture_output=True, text=True, timeout=120)
            self._checked = "" if probe.returncode == 0 else (
                f"larq_compute_engine does not import in {py.parent.parent} "
                f"({(probe.stderr.strip().splitlines() or ['?'])[-1][:120]}); {VENV_HELP}")
        return self._checked or None

    def accepts(self, ref: ModelRef) -> Optional[str]:
        if ref.kind in ("student", "tflite") or (ref.kind == "registered" and ref.name in student_names()):
            return None
        return "lce runs binary students converted by bssl.export (or a bssl .tflite), not FP networks"

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        if ref.kind == "tflite":
            return {"path": ref.path, "bytes": Path(ref.path).stat().st_size}
        from ...export import export_model

        out = ctx.artifact_path(ref, ".lce")
        found = out / "model.tflite"
        if not found.exists():
            found = Path(export_model(ctx.torch_model(ref), "lce", out, check_samples=0,
                                      input_size=ctx.input_size)["path"])
        return {"path": str(found), "bytes": found.stat().st_size}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        raise RuntimeError("lce runs in its own interpreter (bssl/bench/lce_worker.py), not in this process")

    def worker_command(self) -> List[str]:
        py = venv_python()
        return [str(py), str(Path(__file__).resolve().parent.parent / "lce_worker.py")]
