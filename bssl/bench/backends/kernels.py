"""bssl.kernels packed inference (bssl.deploy.pack): binary convs as XNOR-popcount on packed bits,
FP stem/head/RPReLU in torch. The artifact keeps the student's FoldedUnits (1-bit weights) on
disk (bench.packed_artifact)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef, student_names


@BACKENDS.register("kernels")
class KernelsPacked(Backend):
    name = "kernels"
    description = "bssl.kernels packed XNOR-popcount"
    install_hint = ("build the C kernels: `pip install -e . --no-build-isolation` in the checkout "
                    "(needs cmake and a C compiler)")
    imports = ("torch", "bssl.kernels", "bssl.deploy", "bssl.models", "bssl.bench.packed_artifact")

    def availability(self) -> Optional[str]:
        why = super().availability()
        if why:
            return why
        try:
            from ... import kernels
        except ImportError as exc:
            return f"bssl.kernels does not import ({exc}); {self.install_hint}"
        if not kernels.available():
            return f"bssl.kernels.available() is False (library missing or built from older sources); {self.install_hint}"
        return None

    def accepts(self, ref: ModelRef) -> Optional[str]:
        if ref.kind == "student" or (ref.kind == "registered" and ref.name in student_names()):
            return None
        return "kernels runs binary students only (ReActNet, Bi-Real), not FP networks or exported files"

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        from ..packed_artifact import FORMAT, packed_format, save_packed

        path = ctx.artifact_path(ref, ".packed.pt")
        # a file in an older format is written again rather than refused at load
        reuse = path.exists() and packed_format(path) == FORMAT
        n = path.stat().st_size if reuse else save_packed(ctx.torch_model(ref), path)
        return {"path": str(path), "bytes": n}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        import torch

        from ..packed_artifact import load_packed

        torch.set_num_threads(threads)
        model = load_packed(artifact["path"], threads=threads)

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        return run
