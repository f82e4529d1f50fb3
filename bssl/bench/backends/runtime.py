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


INFER_KEYS = ("model", "threads", "repeat", "p50_ms", "min_ms", "input_shape")


def infer_json_row(path, label: Optional[str] = None) -> Dict[str, Any]:
    """A bench table row from the JSON `bssl-infer MODEL --repeat K --json` printed (on a board,
    say): p50/p90/min latency of one image, the process's peak RSS above its empty start, the
    model file's size. The row's backend names where it ran (`label`, else `bssl-infer
    (<uname -m>)`); it carries no `arch`, so this machine's speed targets never compare with it."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--import-json {path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--import-json {path}: not JSON ({exc}); pass what `bssl-infer MODEL --repeat K --json` "
                        "printed") from None
    missing = [k for k in INFER_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"--import-json {path}: not bssl-infer --json output (no {', '.join(missing)}); run "
                        "`bssl-infer MODEL --repeat 100 --json > result.json` on the board")
    machine = str(data.get("machine") or "unknown machine")
    c, h, w = (int(v) for v in data["input_shape"])
    peak, start = data.get("peak_rss_kb", -1), data.get("start_rss_kb", -1)
    row: Dict[str, Any] = {
        "model": f"{data['model']} ({path.name})", "model_ref": str(path), "model_kind": "bssl",
        "backend": label or f"bssl-infer ({machine})", "status": "ok", "imported_from": str(path),
        "machine": machine, "input_size": h if h == w else f"{h}x{w}", "threads": int(data["threads"]),
        "runs": int(data["repeat"]), "p50_ms": float(data["p50_ms"]), "min_ms": float(data["min_ms"]),
    }
    for key in ("p90_ms", "mean_ms", "max_ms"):
        if data.get(key) is not None:
            row[key] = float(data[key])
    if isinstance(peak, (int, float)) and isinstance(start, (int, float)) and peak >= 0 and start >= 0:
        row["peak_mem_mb"] = (peak - start) / 1024.0  # above the empty process, as the bench's baseline does
    if isinstance(data.get("model_bytes"), int) and data["model_bytes"] > 0:
        row["bytes"] = int(data["model_bytes"])
    return row
