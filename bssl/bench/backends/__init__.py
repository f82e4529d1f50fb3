"""Inference backends that `bssl bench` times, one per file, registered by name.

A backend works in two places. In the parent process `prepare()` turns a model reference into
an artifact on disk (an ONNX file, a quantised ONNX file, a compiled TVM library ...) and reports
its size; this is where exporting and compiling happen, outside every measurement. In a fresh
worker process (bssl.bench.worker) `load()` reads that artifact and returns a callable that runs
one float32 NCHW numpy batch; the worker times it and reads its peak memory. Heavy libraries
are imported inside the methods so that listing backends stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ...registry import Registry
from ..models import ModelRef

BACKENDS: Registry[type] = Registry("bench backend")
_INSTANCES: Dict[str, "Backend"] = {}


class Backend:
    """Base class; subclasses set the attributes and override what differs."""

    name: str = ""
    description: str = ""
    install_hint: str = ""
    # modules the worker imports both for the baseline and for the measurement, so that the
    # reported peak memory is the model's, not the libraries'
    imports: Sequence[str] = ()
    # imported too when present (optional parts of bssl a build may lack)
    optional_imports: Sequence[str] = ()
    # model kinds this backend runs as they are (besides torch-rebuildable references)
    file_kinds: Sequence[str] = ()
    remote: bool = False

    def __init__(self) -> None:
        self.options: Dict[str, Any] = {}

    def configure(self, **options: Any) -> None:
        """Backend-specific settings (e.g. the RPC address); unknown keys are ignored by backends."""
        self.options.update(options)

    def availability(self) -> Optional[str]:
        """None when usable here, else one line saying what is missing and how to get it."""
        missing = [m for m in self.imports if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            return f"{', '.join(missing)} not installed; {self.install_hint}"
        return None

    def preflight(self) -> None:
        """Cheap checks that must fail (UserError) before any model is prepared, e.g. a device address."""

    def accepts(self, ref: ModelRef) -> Optional[str]:
        """None when this backend can run the reference, else why not."""
        if ref.is_torch or ref.kind in self.file_kinds:
            return None
        if ref.kind == "onnx-packed":
            return ("a packed ONNX file (ai.bssl 1-bit nodes) is for the TVM importer, not a runtime; "
                    "bench the student checkpoint or its TVM .so")
        return f"{self.name} cannot run a {ref.kind} file"

    def prepare(self, ref: ModelRef, ctx: "PrepareContext") -> Dict[str, Any]:
        """Return the artifact dict: at least `path` (the file measured on disk) and `bytes`."""
        raise AttributeError(f"backend {self.name} has no prepare()")

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        raise AttributeError(f"backend {self.name} has no load()")

    def worker_command(self) -> List[str]:
        """The interpreter command that runs bssl.bench.worker for this backend."""
        return [sys.executable, "-m", "bssl.bench.worker"]


class PrepareContext:
    """What prepare() needs: where to write, the input shape, the seed, and a torch model cache."""

    def __init__(self, out_dir: Path, input_size: int, seed: int = 0, calibration_images: int = 16,
                 batch_sizes: Sequence[int] = (1,)):
        self.out_dir = Path(out_dir)
        self.batch_sizes = sorted({int(b) for b in batch_sizes})
        self.input_size = input_size
        self.seed = seed
        self.calibration_images = calibration_images
        self._torch: Dict[str, Any] = {}
        self._files: Dict[tuple, Any] = {}

    def torch_model(self, ref: ModelRef):
        from ..models import build_torch_model

        if ref.text not in self._torch:
            self._torch[ref.text] = build_torch_model(ref, self.input_size, self.seed)
        return self._torch[ref.text]

    def artifact_path(self, ref: ModelRef, suffix: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ref.label)
        return self.out_dir / "artifacts" / f"{safe}-{self.input_size}{suffix}"

    def cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        """Share artifacts between backends (the FP ONNX file feeds both ORT backends)."""
        if key not in self._files:
            self._files[key] = make()
        return self._files[key]


def backend_names() -> List[str]:
    return list(BACKENDS.names())


def get_backend(name: str) -> Backend:
    """The backend instance of a registered name (one per process, so configure() sticks)."""
    if name not in _INSTANCES:
        _INSTANCES[name] = BACKENDS.get(name)()
    return _INSTANCES[name]


# registration side effects, one module per backend
from . import torch_fp32 as _torch_fp32  # noqa: E402,F401
from . import onnxruntime_fp32 as _ort_fp32  # noqa: E402,F401
from . import onnxruntime_int8 as _ort_int8  # noqa: E402,F401
from . import kernels as _kernels  # noqa: E402,F401
from . import runtime as _runtime  # noqa: E402,F401
from . import tvm as _tvm  # noqa: E402,F401
from . import lce as _lce  # noqa: E402,F401
from . import tvm_rpc as _tvm_rpc  # noqa: E402,F401
