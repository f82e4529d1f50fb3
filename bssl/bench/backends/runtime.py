"""bssl native runtime (libbssl_runtime through bssl.runtime): the whole student in C from a
model.bssl file, no torch in the measured process."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef, student_names


@BACKENDS.register("runtime")
class NativeRuntime(Backend):
    name = "runtime"
    description = "bssl native runtime (model.bssl, fused C graph)"
    install_hint = "build the native runtime: `pip install -e .` in the checkout (needs cmake and a C compiler)"
    # numpy and the binding only: the worker's memory baseline then holds no torch
    imports = ("numpy", "bssl.runtime")

    def availability(self) -> Optional[str]:
        why = super().availability()
        if why:
            return why
        from ... import runtime

        if not runtime.available():
            return f"libbssl_runtime was not found; {self.install_hint}"
        return None

    def accepts(self, ref: ModelRef) -> Optional[str]:
        if ref.kind == "student" or (ref.kind == "registered" and ref.name in student_names()):
            return None
        return "runtime runs binary students only (ReActNet, Bi-Real), not FP networks or exported files"

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        from ...deploy.model_file import write_model_file

        path = ctx.artifact_path(ref, ".bssl")
        if not path.exists():
            write_model_file(ctx.torch_model(ref), path, input_size=ctx.input_size)
        return {"path": str(path), "bytes": path.stat().st_size}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        from ... import runtime

        model = runtime.load(artifact["path"], threads=threads)
        return model.run
