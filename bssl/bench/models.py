"""What `bssl bench` can measure: registered model names or files written by bssl.

A model reference is a string. Either a registered name with optional build options,
``reactnet-a``, ``reactnet-a:width=0.5,stem=small``, ``resnet18`` (a bssl student, else a
torchvision classifier, random-initialised: fine for latency and memory, not for accuracy),
or a path: a student / teacher checkpoint (``.pt``), an ONNX export (``.onnx``), a TVM module
(``.so``), an LCE flatbuffer (``.tflite``) or a native runtime file (``.bssl``, measured by the
``runtime`` backend as it is; its name is the model name stored in the file). Resolving a reference is deterministic (seeded), so
the worker process that measures memory rebuilds exactly the model the parent exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..errors import UserError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar")
EXPORT_SUFFIXES = {".onnx": "onnx", ".so": "tvm", ".tflite": "tflite", ".bssl": "bssl"}


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. `kind`: registered | student | teacher | onnx | onnx-packed | tvm | tflite | bssl."""

    text: str
    kind: str
    name: str
    options: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    @property
    def label(self) -> str:
        if self.path is not None:
            p = Path(self.path)
            # exports are named model.onnx / model.so inside format folders: keep the folder
            return f"{p.parent.name}/{p.name}" if p.stem.startswith("model") else p.name
        if not self.options:
            return self.name
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})"

    @property
    def is_torch(self) -> bool:
        """True when the reference can be rebuilt as a torch module (then every backend can export it)."""
        return self.kind in ("registered", "student", "teacher")

    def to_json(self) -> Dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "name": self.name, "options": self.options, "path": self.path}

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "ModelRef":
        return ModelRef(text=d["text"], kind=d["kind"], name=d["name"], options=dict(d["options"]), path=d["path"])


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def student_names() -> list:
    try:
        from ..models import model_names  # type: ignore[attr-defined]
        return list(model_names())
    except ImportError:
        pass
    try:
        from ..models import MODELS  # type: ignore[attr-defined]
        return list(MODELS.names())
    except ImportError:
        return []


def _torchvision_names() -> list:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def parse_model_ref(text: str) -> ModelRef:
    """Parse a model reference; raise UserError naming the value when it is neither a file nor a known name."""
    text = str(text).strip()
    if not text:
        raise UserError("empty model reference; pass a registered name (reactnet-a, resnet18) or a model file")
    path = Path(text)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or path.suffix.lower() in EXPORT_SUFFIXES or path.exists():
        return _parse_path(path, text)
    name, _, opt_text = text.partition(":")
    options: Dict[str, Any] = {}
    if opt_text:
        for item in opt_text.split(","):
            if "=" not in item:
                raise UserError(f"model option {item!r} in {text!r} must look like key=value, e.g. reactnet-a:width=0.5")
            key, raw = item.split("=", 1)
            options[key.strip()] = _parse_value(raw.strip())
    if name in student_names() or name in _torchvision_names():
        return ModelRef(text=text, kind="registered", name=name, options=options)
    known = ", ".join(sorted(set(student_names())) or ["(bssl.models not installed)"])
    raise UserError(
        f"model {text!r} is neither an existing file nor a registered name; students: {known}; "
        f"or any torchvision classifier name such as resnet18"
    )


def _parse_path(path: Path, text: str) -> ModelRef:
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; pass a checkpoint or export written by bssl")
    suffix = path.suffix.lower()
    if suffix in EXPORT_SUFFIXES:
        kind = _check_export(path, EXPORT_SUFFIXES[suffix])
        name = bssl_model_info(path)["model"] if kind == "bssl" else path.stem
        return ModelRef(text=text, kind=kind, name=name or path.stem, path=str(path.resolve()))
    from ..utils import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except UserError as exc:
        if "not a bssl checkpoint" not in str(exc):
            raise
        # official MoCo / SimSiam / torchvision files are teachers too (load_teacher reads them)
        from ..teachers import load_teacher

        load_teacher(path)
        return ModelRef(text=text, kind="teacher", name=path.stem, path=str(path.resolve()))
    kind = ckpt["bssl_kind"]
    if kind not in ("student", "teacher"):
        raise UserError(f"checkpoint {path} holds a {kind!r}; bssl bench measures student or teacher checkpoints")
    return ModelRef(text=text, kind=kind, name=path.stem, path=str(path.resolve()))


def _check_export(path: Path, kind: str) -> str:
    """Refuse files that are not bssl exports; return the kind. An ONNX file with custom-domain
    nodes (the 1-bit `onnx-packed` export) is told apart: onnxruntime cannot run it."""
    if kind == "onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise UserError(f"model file {path} is not an ONNX model ({type(exc).__name__}); pass a file written by `bssl export`") from None
        meta = {p.key: p.value for p in proto.metadata_props}
        if not any(k.startswith("bssl") for k in meta) and not proto.producer_name.startswith("bssl"):
            raise UserError(
                f"model file {path} is an ONNX model but not a bssl export (no bssl metadata); "
                f"export it with `bssl export` or pass the checkpoint instead"
            )
        if any(n.domain not in ("", "ai.onnx", "ai.onnx.ml") for n in proto.graph.node):
            return "onnx-packed"
    elif kind == "tvm":
        head = path.read_bytes()[:4]
        if head != b"\x7fELF":
            raise UserError(f"model file {path} is not a shared library (no ELF header); pass a .so written by `bssl export --format tvm`")
    elif kind == "bssl":
        bssl_model_info(path)
    elif kind == "tflite":
        head = path.read_bytes()[:8]
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise UserError(f"model file {path} is not a TFLite flatbuffer; pass a .tflite written by `bssl export --format lce`")
    return kind


def bssl_model_info(path) -> Dict[str, Any]:
    """Input shape and model name of a model.bssl file, read from its header and metadata without
    the runtime library; UserError when the file is not one."""
    import struct

    from ..deploy.model_file import read_header

    with open(path, "rb") as fh:
        data = fh.read(1 << 16)
    try:
        h = read_header(data)
    except UserError:
        raise UserError(f"model file {path} is not a model.bssl file (bad magic); pass a file written by "
                        "`bssl export --format bssl`") from None
    c = h["input_shape"][0]
    name = ""
    at = h["meta_off"] + 8 * c
    if at + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, at)
        name = data[at + 4:at + 4 + n].decode("utf-8", "replace")
    return {"input_shape": tuple(h["input_shape"]), "model": name, "num_classes": h["num_classes"]}


def build_torch_model(ref: ModelRef, input_size: int, seed: int = 0) -> torch.nn.Module:
    """Rebuild the torch module of a reference in eval mode (random init for names, seeded)."""
    if ref.kind == "student":
        from ..models import load_student

        return load_student(ref.path).eval()
    if ref.kind == "teacher":
        from ..teachers import load_teacher

        backbone, _info = load_teacher(ref.path)
        return backbone.eval()
    if ref.kind != "registered":
        raise UserError(f"{ref.text} is an exported {ref.kind} file; it has no torch module to run")
    torch.manual_seed(seed)
    if ref.name in student_names():
        from ..models import build_model

        opts = {"input_size": input_size, **ref.options}
        try:
            return build_model(ref.name, **opts).eval()
        except TypeError as exc:
            raise UserError(f"model {ref.text}: bad build option ({exc})") from None
    import torchvision

    try:
        return torchvision.models.get_model(ref.name, weights=None, **ref.options).eval()
    except TypeError as exc:
        raise UserError(f"model {ref.text}: bad build option ({exc})") from None
