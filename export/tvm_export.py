"""TVM export: a packed student -> Relax -> one deployable shared library per target.

Route (public APIs of TVM 0.27, see docs/export.md): `torch.export` of the packed inference graph
(each BinaryConvBN is one `bssl::binary_conv2d` custom op) -> `tvm.relax.frontend.torch.
from_exported_program(custom_convert_map={"binary_conv2d.default": ...})`, which lowers each
binary conv onto the scheduled XNOR-popcount PrimFunc of export/tvm_kernels.py; the FP rest
(stem, pooling, RPReLU, concat, linear) goes through Relax's own legalisation. `tvm.compile`
builds a Relax VM executable, `export_library` links it (with the cross compiler for ARM).
The library is fixed to one batch size (deployment batch, default 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..classifier import classifier_info_of
from ..errors import UserError
from . import fold, targets

LIB_NAME = "model.so"
RUNNER_NAME = "run_model.py"
META_NAME = "model.json"


def _convert_binary_conv(kernel_config):
    def convert(node, importer):
        from tvm import relax

        from .ops import output_size
        from .tvm_kernels import binary_conv_primfunc, weight_relayout_te

        bb = importer.block_builder
        x, bias, wbits, scale, shift = (importer.env[a] for a in node.args[:5])
        cin, kernel, stride, padding = (int(v) for v in node.args[5:9])
        n, c, h, w = (int(v) for v in x.ty.shape)
        o = int(wbits.ty.shape[0])
        wt = bb.emit_te(weight_relayout_te, wbits, primfunc_name_hint="bssl_weight_relayout")
        func = binary_conv_primfunc(n, c, h, w, o, kernel, stride, padding, kernel_config)
        name = f"bssl_binary_conv2d_{c}x{h}x{w}_{o}_k{kernel}s{stride}"
        gv = bb.add_func(func.with_attr("global_symbol", name), name)
        out_shape = (n, o, output_size(h, kernel, stride, padding), output_size(w, kernel, stride, padding))
        return bb.emit(relax.call_tir(gv, [x, bias, wt, scale, shift],
                                      out_ty=relax.TensorType(out_shape, "float32")))

    return convert


def to_relax(src, kernel_config, batch: int = 1, input_size: Optional[int] = None):
    """The Relax IRModule of a student (binary convs already lowered to XNOR-popcount TIR)."""
    from tvm.relax.frontend.torch import from_exported_program

    model = fold.deploy_model(src, packed=True)
    size = input_size or fold.input_size_of(fold.load_student_model(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ep = torch.export.export(model, (torch.zeros(batch, 3, size, size),))
        except Exception as exc:
            raise UserError(f"torch.export of the student failed: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200]}") from None
    try:
        return from_exported_program(ep, custom_convert_map={"binary_conv2d.default": _convert_binary_conv(kernel_config)})
    except AssertionError as exc:
        # The importer asserts on aten ops it has no converter for: name them.
        raise UserError(f"the TVM importer cannot map an op of this student: {exc}") from None


def compile_model(src, target_name: str = "x86-64", batch: int = 1, input_size: Optional[int] = None):
    """(executable, Target): the compiled Relax VM executable for one target."""
    import tvm

    target = targets.get_target(target_name)
    targets.require_toolchain(target)
    mod = to_relax(src, target.kernel, batch, input_size)
    from .tvm_schedule import cpu_pipeline

    tvm_target = target.tvm_target()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = tvm.compile(mod, target=tvm_target, relax_pipeline=cpu_pipeline(tvm_target, target.kernel.lanes))
    return ex, target


def _export_library(ex, target: targets.Target, path: Path) -> None:
    if target.cc:
        ex.export_library(str(path), cc=target.cc)
    else:
        ex.export_library(str(path))


def disassembly_has(path: Path, objdump: str, patterns) -> Dict[str, int]:
    """How often each regex occurs in the disassembly (e.g. the vector popcount instruction)."""
    if shutil.which(objdump) is None:
        return {}
    text = subprocess.run([objdump, "-d", str(path)], capture_output=True, text=True, check=False).stdout
    return {pattern: len(re.findall(pattern, text)) for pattern in patterns}


# NEON vector popcounts: `cnt v0.16b, v1.16b` (aarch64), `vcnt.8 q0, q1` (armv7).
POPCOUNT_INSTRUCTIONS = {"aarch64": [r"\bcnt\s+v\d+\.(?:8|16)b"], "armv7": [r"\bvcnt\.8\b"]}


def load_runner(lib_path: Path):
    """A callable x -> (logits, features) over a library built for this machine."""
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(lib_path))
    dev = tvm.cpu()
    vm = relax.VirtualMachine(lib, dev)

    def run(x: np.ndarray):
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev))
        return out[0].numpy(), out[1].numpy()

    return run


def run_batched(run, x: np.ndarray, batch: int):
    logits, feats = [], []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        if len(chunk) < batch:  # the library has a fixed batch: pad the last chunk
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
        lo, fe = run(chunk)
        logits.append(lo[:len(x) - i])
        feats.append(fe[:len(x) - i])
    return np.concatenate(logits), np.concatenate(feats)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def export_tvm(src, out_dir: Path, target_name: str = "x86-64", batch: int = 1, check_samples: int = 8,
               input_size: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Build `out_dir/` with model.so, model.json and run_model.py; check it where it can run."""
    student = fold.load_student_model(src)
    size = input_size or fold.input_size_of(student)
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    ex, target = compile_model(student, target_name, batch, size)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        lib = tmp / LIB_NAME
        _export_library(ex, target, lib)
        shutil.copyfile(Path(__file__).with_name("tvm_runner.py"), tmp / RUNNER_NAME)
        result: Dict[str, Any] = {
            "format": "tvm", "target": target.name, "llvm_target": target.llvm, "batch": batch,
            "input_shape": [batch, 3, size, size], "outputs": ["logits", "features"],
            "elf_machine": targets.elf_machine(lib), "kernel": {"lanes": target.kernel.lanes,
                                                                "xtile": target.kernel.xtile},
        }
        info = classifier_info_of(student)
        if info:  # a classifier: class names and preprocessing go into model.json
            result["classifier"] = {k: info.get(k) for k in ("classes", "preprocess", "accuracy")}
        if result["elf_machine"] != target.elf_machine:
            raise RuntimeError(f"linked library is {result['elf_machine']}, expected {target.elf_machine}")
        if target.name in POPCOUNT_INSTRUCTIONS:
            result["popcount_instructions"] = disassembly_has(lib, target.objdump, POPCOUNT_INSTRUCTIONS[target.name])
        if check_samples and target.native():
            x = fold.check_inputs(check_samples, size, seed)
            ref_logits, ref_feats = fold.reference_outputs(student, x)
            logits, feats = run_batched(load_runner(lib), x.numpy(), batch)
            cmp = fold.compare(ref_logits, logits)
            cmp["features"] = fold.compare(ref_feats, feats)
            cmp["runtime"] = "tvm"
            result["equivalence"] = cmp
        (tmp / META_NAME).write_text(json.dumps(result, indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result["path"] = str(out_dir / LIB_NAME)
    result["bytes"] = (out_dir / LIB_NAME).stat().st_size
    return result
