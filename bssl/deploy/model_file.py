"""Writer (and a small reader for inspection) of `model.bssl`, the native runtime's model file.

    from bssl.deploy.model_file import write_model_file
    info = write_model_file("runs/x/student.pt", "exports/model.bssl")

The layout is specified in docs/model-format.md. The student is folded once by
`bssl.deploy.fold.fold_student` and lowered by `bssl.deploy.graph.lower_student`; this module
only lays the graph out in bytes. Writes are atomic: a temp file beside the target, renamed over
it once complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from .graph import OP_FIELDS, OP_TYPES, OPTIONAL, Graph

MAGIC = b"BSSLMODL"
FORMAT_VERSION = 1
HEADER_BYTES = 128
OP_WORDS = 32
NONE = 0xFFFFFFFF
DTYPES = {"f32": 1, "f16": 2, "bits": 3}
DEFAULT_MEAN = (0.485, 0.456, 0.406)  # ImageNet, as bssl.data.augment normalises
DEFAULT_STD = (0.229, 0.224, 0.225)


def checksum(data: bytes) -> int:
    """CRC-32 (zlib / IEEE 802.3) of `data`, as the runtime verifies it."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def _tensor_bytes(a: np.ndarray, float16: bool):
    if a.dtype == np.uint64:
        return DTYPES["bits"], np.ascontiguousarray(a.astype("<u8")).tobytes()
    if a.dtype.kind != "f":
        raise ValueError(f"tensor dtype {a.dtype} is neither float nor packed bits")
    if float16:
        return DTYPES["f16"], np.ascontiguousarray(a.astype("<f2")).tobytes()
    return DTYPES["f32"], np.ascontiguousarray(a.astype("<f4")).tobytes()


def _op_words(op) -> List[int]:
    words = [OP_TYPES[op.kind]]
    for f in OP_FIELDS[op.kind]:
        v = op.fields.get(f)
        if v is None:
            if f not in OPTIONAL:
                raise ValueError(f"op {op.kind} {op.name}: field {f} is missing")
            words.append(NONE)
        elif f == "pad_value":
            words.append(struct.unpack("<I", struct.pack("<f", float(v)))[0])
        else:
            words.append(int(v))
    return words + [0] * (OP_WORDS - len(words))


def serialize(graph: Graph, *, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
              class_names: Optional[Sequence[str]] = None, float16: bool = False) -> bytes:
    """The bytes of a model.bssl file for a lowered graph.

    float16: store the float parts (FP conv and FC weights, biases, scales) as float16, about half
    the file for float-heavy heads; the binary weights are bits either way. Default float32.
    """
    c, h, w = graph.input_shape
    if len(mean) != c or len(std) != c:
        raise UserError(f"mean/std need {c} values each, got {len(mean)} and {len(std)}")
    ncls = graph.values[graph.logits][0]
    feat = graph.values[graph.features][0]
    names = list(class_names or [])
    if names and len(names) != ncls:
        raise UserError(f"{len(names)} class names for a classifier with {ncls} outputs")
    meta = struct.pack(f"<{c}f{c}f", *[float(v) for v in mean], *[float(v) for v in std])
    meta += _string(graph.name) + struct.pack("<I", len(names)) + b"".join(_string(str(n)) for n in names)
    values = b"".join(struct.pack("<4I", vc, vh, vw, 0) for vc, vh, vw in graph.values)
    ops = b"".join(struct.pack(f"<{OP_WORDS}I", *_op_words(op)) for op in graph.ops)
    table, blobs, off = [], [], 0
    for t in graph.tensors:
        dt, raw = _tensor_bytes(t, float16)
        dims = list(t.shape) + [0] * (4 - t.ndim)
        if not 1 <= t.ndim <= 4:
            raise ValueError(f"tensor of shape {t.shape}: 1 to 4 dims")
        table.append(struct.pack("<6IQ", dt, t.ndim, *dims, off))
        pad = (-len(raw)) % 64
        blobs.append(raw + b"\0" * pad)
        off += len(raw) + pad
    tensors = b"".join(table)
    data = b"".join(blobs)

    def align(n: int) -> int:
        return (n + 63) // 64 * 64

    meta_off = HEADER_BYTES
    values_off = meta_off + len(meta)
    ops_off = values_off + len(values)
    tensors_off = ops_off + len(ops)
    data_off = align(tensors_off + len(tensors))
    total = data_off + len(data) + 4
    header = MAGIC + struct.pack("<IIQ", FORMAT_VERSION, HEADER_BYTES, total)
    header += struct.pack("<5I", c, h, w, ncls, feat)
    header += struct.pack("<3I", len(graph.values), len(graph.ops), len(graph.tensors))
    header += struct.pack("<7Q", meta_off, len(meta), values_off, ops_off, tensors_off, data_off, len(data))
    header += struct.pack("<4I", 0, graph.features, graph.logits, 0)
    assert len(header) == HEADER_BYTES
    body = header + meta + values + ops + tensors
    body += b"\0" * (data_off - len(body)) + data
    return body + struct.pack("<I", checksum(body))


def _load_src(src):
    from torch import nn

    if isinstance(src, nn.Module):
        return src
    from ..models import load_student

    return load_student(Path(src))


def write_model_file(src, path, *, input_size: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                     mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                     float16: bool = False) -> Dict[str, Any]:
    """Fold, lower and write a student (checkpoint path or nn.Module) to `path` atomically."""
    import copy

    from ..nn import get_stage
    from ..utils import atomic_path
    from .graph import lower_student

    model = copy.deepcopy(_load_src(src)).cpu().eval()
    try:
        stage = get_stage(model)
    except ValueError as exc:
        raise UserError(f"{type(model).__name__}: {exc}; the native runtime needs a fully binary (stage-2) student") from None
    if stage != 2:
        raise UserError("the native runtime needs a stage-2 student (binary weights); "
                        "bssl.nn.set_stage(model, 2) or distill with stage 2")
    graph = lower_student(model, input_size)
    blob = serialize(graph, mean=mean, std=std, class_names=class_names, float16=float16)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a normal file for whoever deploys it, not the temp file's 0600
    return {"format": "bssl", "path": str(path), "bytes": len(blob), "version": FORMAT_VERSION,
            "input_shape": list(graph.input_shape), "ops": len(graph.ops), "binary_convs": graph.count("bconv"),
            "float16": bool(float16), "model": graph.name}


def export_bssl(model, path, *, check_samples: int = 8, seed: int = 0, input_size: Optional[int] = None,
                float16: bool = False, class_names: Optional[Sequence[str]] = None, **_ignored) -> Dict[str, Any]:
    """`bssl export --format bssl`: write model.bssl and, when the runtime library is built, compare
    its logits with the PyTorch student on `check_samples` random inputs."""
    info = write_model_file(model, path, input_size=input_size, float16=float16, class_names=class_names)
    if check_samples > 0:
        from .. import runtime

        if not runtime.available():
            info["equivalence_skipped"] = "libbssl_runtime is not built"
            return info
        import torch

        from ..export.fold import compare, reference_outputs

        c, h, w = info["input_shape"]
        x = torch.randn(check_samples, c, h, w, generator=torch.Generator().manual_seed(seed))
        ref, _ = reference_outputs(model, x)
        with runtime.load(path) as m:
            got, _ = m.run(x.numpy())
        info["equivalence"] = {**compare(ref, got), "runtime": "bssl native runtime"}
    return info


def read_header(data: bytes) -> Dict[str, Any]:
    """The header fields of a model.bssl file (no validation beyond the magic; for tests and tools)."""
    if len(data) < HEADER_BYTES or data[:8] != MAGIC:
        raise UserError("not a model.bssl file (bad magic or shorter than the header)")
    version, hbytes, total = struct.unpack_from("<IIQ", data, 8)
    c, h, w, ncls, feat, nv, nops, nt = struct.unpack_from("<8I", data, 24)
    meta_off, meta_len, values_off, ops_off, tensors_off, data_off, data_len = struct.unpack_from("<7Q", data, 56)
    flags, fv, lv, _ = struct.unpack_from("<4I", data, 112)
    return dict(version=version, header_bytes=hbytes, file_bytes=total, input_shape=(c, h, w), num_classes=ncls,
                feature_dim=feat, n_values=nv, n_ops=nops, n_tensors=nt, meta_off=meta_off, meta_bytes=meta_len,
                values_off=values_off, ops_off=ops_off, tensors_off=tensors_off, data_off=data_off,
                data_bytes=data_len, flags=flags, features_value=fv, logits_value=lv)


def reseal(data: bytes) -> bytes:
    """The same bytes with the checksum recomputed (tests build damaged-but-sealed files with it)."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", checksum(body))


__all__ = ["write_model_file", "export_bssl", "serialize", "read_header", "reseal", "checksum", "FORMAT_VERSION", "MAGIC"]
