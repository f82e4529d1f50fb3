"""bssl native runtime (libbssl_runtime through bssl.runtime): the whole student in C from a
model.bssl file, no torch in the measured process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from . import BACKENDS, Backend, PrepareContext
from ...errors import UserError
from ..models import ModelRef, bssl_model_info, student_names


@BACKENDS.register("runtime")
class NativeRuntime(Backend):
    name = "runtime"
    description = "bssl native runtime (model.bssl, fused C graph)"
    install_hint = "build the native runtime: `pip install -e .` in the checkout (needs cmake and a C compiler)"
    # numpy and the binding only: the worker's memory baseline then holds no torch
    imports = ("numpy", "bssl.runtime")
    file_kinds = ("bssl",)

    def availability(self) -> Optional[str]:
        why = super().availability()
        if why:
            return why
        from ... import runtime

        if not runtime.available():
            return f"libbssl_runtime was not found; {self.install_hint}"
        return None

    def accepts(self, ref: ModelRef) -> Optional[str]:
        if ref.kind in ("student", "bssl") or (ref.kind == "registered" and ref.name in student_names()):
            return None
        return "runtime runs binary students (ReActNet, Bi-Real) and model.bssl files, not FP networks or other exports"

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        from ...deploy.model_file import write_model_file

        if ref.kind == "bssl":  # the deployed file itself, at the input size it was exported for
            shape = bssl_model_info(ref.path)["input_shape"]
            if shape[1:] != (ctx.input_size, ctx.input_size):
                raise UserError(f"{ref.path} takes {shape[1]}x{shape[2]} inputs; bench it with --input-size {shape[2]}")
            return {"path": ref.path, "bytes": Path(ref.path).stat().st_size}
        path = ctx.artifact_path(ref, ".bssl")
        if not path.exists():
            write_model_file(ctx.torch_model(ref), path, input_size=ctx.input_size)
        return {"path": str(path), "bytes": path.stat().st_size}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        from ... import runtime

        model = runtime.load(artifact["path"], threads=threads)
        return model.run
