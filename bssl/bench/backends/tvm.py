"""TVM on this CPU: the student compiled by bssl.export.tvm_export (XNOR-popcount TIR kernels for
the binary convs, Relax VM). TVM libraries have a fixed batch, so one library per batch size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef, student_names

HOST_TARGET = "x86-64"


def host_target() -> str:
    import platform

    return {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "aarch64", "arm64": "aarch64",
            "armv7l": "armv7"}.get(platform.machine().lower(), HOST_TARGET)


def compile_libs(ref: ModelRef, ctx: PrepareContext, target: str) -> Dict[str, Any]:
    """One library per batch size through bssl.export.export_model(..., "tvm", target=...)."""
    from ...export import export_model

    libs = {}
    for batch in ctx.batch_sizes:
        out = ctx.artifact_path(ref, f".{target}-b{batch}")
        found = sorted(out.glob("tvm-*/model.so")) if out.exists() else []
        if found:
            libs[str(batch)] = str(found[0])
            continue
        res = export_model(ctx.torch_model(ref), "tvm", out, target=target, batch=batch, check_samples=0,
                           input_size=ctx.input_size, seed=ctx.seed)
        libs[str(batch)] = str(res["path"])
    first = libs[str(min(ctx.batch_sizes))]
    return {"path": first, "bytes": Path(first).stat().st_size, "libs": libs, "target": target}


@BACKENDS.register("tvm")
class TVMBinary(Backend):
    name = "tvm"
    description = "TVM (Relax VM), XNOR-popcount kernels"
    install_hint = "pip install apache-tvm (0.27+)"
    imports = ("numpy", "tvm", "tvm.relax")
    optional_imports = ("bssl.export.tvm_export",)  # load() uses its runner; keep it out of the model's memory
    file_kinds = ("tvm",)

    def accepts(self, ref: ModelRef) -> Optional[str]:
        if ref.kind in ("student", "tvm") or (ref.kind == "registered" and ref.name in student_names()):
            return None
        return "tvm compiles binary students (bssl.export.tvm_export), not FP networks or other files"

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        if ref.kind == "tvm":
            meta = Path(ref.path).with_name("model.json")
            batch = json.loads(meta.read_text())["input_shape"][0] if meta.is_file() else 1
            return {"path": ref.path, "bytes": Path(ref.path).stat().st_size, "libs": {str(batch): ref.path}}
        return compile_libs(ref, ctx, host_target())
    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        import numpy as np

        from ...export.tvm_export import load_runner

        libs = {int(b): p for b, p in artifact["libs"].items()}
        runners: Dict[int, Any] = {}

        def runner(batch: int):
            # load a library the first time its batch is asked for, so batch-1 memory excludes the rest
            if batch not in runners:
                runners[batch] = load_runner(Path(libs[batch]))
            return runners[batch]

        def run(x):
            n = x.shape[0]
            if n in libs:
                return runner(n)(x)
            b = min(libs)  # no library for this batch: run it in chunks of the smallest one
            outs = [runner(b)(np.ascontiguousarray(x[i:i + b])) for i in range(0, n - n % b, b)]
            return outs

        return run
