"""PyTorch eager FP32: teachers as they are, students with float (simulated ±1) weights."""

from __future__ import annotations

from typing import Any, Callable, Dict

from . import BACKENDS, Backend, PrepareContext
from ..models import ModelRef


@BACKENDS.register("torch")
class TorchFP32(Backend):
    name = "torch"
    description = "PyTorch eager, FP32"
    install_hint = "pip install torch torchvision"
    imports = ("torch", "torchvision", "bssl.bench.models")
    optional_imports = ("bssl.models", "bssl.teachers")

    def prepare(self, ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
        import torch

        path = ctx.artifact_path(ref, ".torch.pt")
        if not path.exists():
            from ...utils import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(ctx.torch_model(ref).state_dict(), tmp)
        return {"path": str(path), "bytes": path.stat().st_size, "ref": ref.to_json(),
                "input_size": ctx.input_size, "seed": ctx.seed}

    def load(self, artifact: Dict[str, Any], threads: int) -> Callable[[Any], Any]:
        import torch

        from ..models import build_torch_model

        torch.set_num_threads(threads)
        ref = ModelRef.from_json(artifact["ref"])
        model = build_torch_model(ref, artifact["input_size"], artifact["seed"])
        if ref.kind == "registered":
            model.load_state_dict(torch.load(artifact["path"], map_location="cpu", weights_only=True))

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        return run
