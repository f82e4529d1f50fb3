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

    float16: store the classifier head (the linear op's weight and bias) as float16, most of the float
    bytes of a 1000-class model. Everything before the last sign stays float32: a float16 rounding there
    flips sign decisions near zero, and a flipped bit propagates through the binary layers (on a real
    CIFAR-10 classifier a file with every float part in float16 agreed with the float32 file on only
    59 % of the images). The binary weights are bits either way. Default float32.
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
    head = {op.fields[f] for op in graph.ops if op.kind == "linear" for f in ("weight", "bias")
            if op.fields.get(f) is not None}
    table, blobs, off = [], [], 0
    for i, t in enumerate(graph.tensors):
        dt, raw = _tensor_bytes(t, float16 and i in head)
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


README_TEMPLATE = """bssl-infer for {target} and model.bssl ({model}, input {shape}, {classes} classes)
bssl-infer is statically linked: it needs no libraries on the board, only {os_note}.

1. Copy this folder to the board, e.g.  scp -r {folder} user@board:

2. Run, on the board, inside the folder:
     ./bssl-infer model.bssl --input x.npy --repeat 100 --json > result.json
   x.npy: float32 (C,H,W) or (N,C,H,W), already normalised (mean {mean}, std {std});
   or a binary PPM/PGM image (x.ppm), which bssl-infer resizes and normalises itself.
   Without --input a fixed pseudo-random input is timed. --threads N splits every layer over N
   cores; the results are the same for any N.

3. Read the JSON: p50_ms, mean_ms, min_ms, max_ms are the latency of one image (batch 1) over the
   --repeat runs; images[i].top the top classes with their logits; peak_rss_kb the process's peak
   memory (start_rss_kb before the model was loaded); machine is the board's `uname -m`.
   To put the board's numbers beside the other backends:
     bssl bench --import-json result.json --label "{target} board"
"""

OS_NOTES = {"x86-64": "a 64-bit x86 Linux",
            "aarch64": "a 64-bit ARM Linux (Raspberry Pi OS 64-bit, Ubuntu arm64, ...)",
            "armv7": "a 32-bit ARM Linux with hard float (armhf; NEON is used where the CPU has it)"}


def _check_binary(runner: List[str], exe: Path, model_path: Path, seed: int) -> Dict[str, Any]:
    """Run the target bssl-infer (natively or under qemu-user) on a few inputs and compare its
    logits with this machine's runtime: the builds agree bit for bit (docs/model-format.md)."""
    import json
    import subprocess
    import tempfile

    from .. import runtime

    with runtime.load(model_path) as m:
        c, h, w = m.input_shape
        x = np.random.default_rng(seed).standard_normal((2, c, h, w)).astype(np.float32)
        ref = m.run(x)[0]
    top = min(ref.shape[1], 64)
    with tempfile.TemporaryDirectory(prefix="bssl-check-") as tmp:
        np.save(Path(tmp) / "x.npy", x)
        r = subprocess.run([*runner, str(exe), str(model_path), "--input", str(Path(tmp) / "x.npy"), "--json",
                            "--top", str(top)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise UserError(f"the built bssl-infer failed on this machine ({' '.join(runner) or 'native'}): "
                        f"{(r.stderr or r.stdout).strip()[:300]}")
    diff = 0.0
    for i, img in enumerate(json.loads(r.stdout)["images"]):
        for t in img["top"]:
            # %.9g round-trips float32 exactly: compare as float32
            diff = max(diff, abs(float(np.float32(t["logit"])) - float(ref[i, t["class"]])))
    return {"runner": " ".join(runner) or "native", "inputs": len(x), "classes_compared": top,
            "max_abs_diff": diff, "identical": diff == 0.0}


def export_bssl_target(model, folder, target: str, *, check_samples: int = 8, seed: int = 0, **opts) -> Dict[str, Any]:
    """`bssl export --format bssl --target T`: a folder with model.bssl, a statically linked
    bssl-infer for T (x86-64, aarch64, armv7) and README.txt. The folder is assembled beside its
    final place and renamed into it once complete; a missing cross compiler fails before anything
    is written. When the binary can run here (natively or under qemu-user) its logits are compared
    with this machine's runtime."""
    import shutil
    import tempfile

    from ..kernels.cross import BuildError, build_infer, check_tools, emulator_command, get_target

    folder = Path(folder)
    try:
        spec = get_target(target)
        check_tools(spec)
    except BuildError as exc:
        raise UserError(str(exc)) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        try:
            exe = build_infer(spec.name)
        except BuildError as exc:
            raise UserError(str(exc)) from None
        info = export_bssl(model, tmp / "model.bssl", check_samples=check_samples, seed=seed, **opts)
        shutil.copy2(exe, tmp / "bssl-infer")
        os.chmod(tmp / "bssl-infer", 0o755)
        c, h, w = info["input_shape"]
        header = read_header((tmp / "model.bssl").read_bytes()[:HEADER_BYTES])
        mean, std = opts.get("mean", DEFAULT_MEAN), opts.get("std", DEFAULT_STD)
        (tmp / "README.txt").write_text(README_TEMPLATE.format(
            target=spec.name, model=info["model"], shape=f"{c}x{h}x{w}", classes=header["num_classes"],
            os_note=OS_NOTES[spec.name], folder=folder.name, mean=[round(float(v), 4) for v in mean],
            std=[round(float(v), 4) for v in std]))
        runner = emulator_command(spec.name)
        if check_samples > 0 and runner is not None:
            info["target_check"] = _check_binary(runner, tmp / "bssl-infer", tmp / "model.bssl", seed)
        elif check_samples > 0:
            info["target_check_skipped"] = f"{spec.emulator[0] if spec.emulator else 'an x86-64 CPU'} is not available here"
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    binary = folder / "bssl-infer"
    info.update(path=str(folder), model_path=str(folder / "model.bssl"), binary=str(binary), target=spec.name,
                binary_bytes=binary.stat().st_size, model_bytes=info["bytes"],
                bytes=sum(f.stat().st_size for f in folder.iterdir()))
    if "target_check" in info:
        info["target_check"]["binary"] = str(binary)
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


__all__ = ["write_model_file", "export_bssl", "export_bssl_target", "serialize", "read_header", "reseal", "checksum", "FORMAT_VERSION", "MAGIC"]
