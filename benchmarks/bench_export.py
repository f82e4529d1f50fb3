"""Exported ReActNet-A side by side, one command, one process, single thread, batch 1:

    python benchmarks/bench_export.py                      # 224 px, the issue's comparison
    python benchmarks/bench_export.py --size 64 --runs 5   # a quick look

Rows: TVM x86 library (XNOR-popcount TIR) | bssl.deploy.pack (bssl.kernels) | onnxruntime FP32 of
the same student | onnxruntime FP32 ResNet-18 (the FP teacher) | LCE .tflite (if .larq-venv
exists) | PyTorch eager. Targets checked: TVM <= 2x the kernels path, TVM < onnxruntime
ResNet-18; plus file sizes (onnx-packed vs onnx) and TVM/onnxruntime/LCE equivalence with
PyTorch at this input size. Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before tvm starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bssl.export import export_model, larq_env  # noqa: E402
from bssl.models import build_model  # noqa: E402
from bssl.utils import write_json  # noqa: E402


def _stats(ts) -> Dict[str, float]:
    a = np.asarray(ts)
    return {"p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()),
            "runs": int(a.size)}


def time_interleaved(fns: Dict[str, Callable[[], Any]], warmup: int, runs: int) -> Dict[str, Dict[str, float]]:
    """Round-robin timing: one call of each backend per round, so load from other processes on a
    shared machine hits every backend alike and the ratios stay comparable."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, list] = {k: [] for k in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: _stats(v) for k, v in times.items()}


def randomised_student(size: int, seed: int = 0) -> torch.nn.Module:
    """ReActNet-A with non-trivial BN statistics and biases (a trained net's shape of numbers)."""
    torch.manual_seed(seed)
    m = build_model("reactnet-a", num_classes=1000, input_size=size, stem="imagenet" if size >= 96 else "small")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(0.5 * torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(mod.num_features, generator=g))
        for name, p in m.named_parameters():
            if name.endswith(("sign.bias", "bias_in", "bias_out")):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return m.eval()


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def resnet18_onnx(path: Path, size: int) -> Path:
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000).eval()
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (torch.zeros(1, 3, size, size),), None, input_names=["input"],
                                 opset_version=18, external_data=False, verbose=False)
    prog.save(str(path))
    return path


LCE_TIMER = """
import sys, time, numpy as np
from larq_compute_engine.tflite.python.interpreter import Interpreter
interp = Interpreter(open(sys.argv[1], "rb").read(), num_threads=1)
shape = tuple(interp.input_shapes[0])
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
for _ in range(int(sys.argv[2])): interp.predict(x)
ts = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); interp.predict(x); ts.append((time.perf_counter() - t0) * 1e3)
print(" ".join(f"{t:.4f}" for t in ts))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--equiv-samples", type=int, default=32, help="random inputs for the equivalence checks")
    ap.add_argument("--target", default="x86-64")
    ap.add_argument("--no-lce", action="store_true", help="skip LCE even when .larq-venv exists")
    ap.add_argument("--torch-runs", type=int, default=3, help="timed runs of PyTorch eager (slow: float convs)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_export"))
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/bench_export.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    size = args.size
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    student = randomised_student(size)
    x = np.random.default_rng(1).standard_normal((1, 3, size, size), dtype=np.float32)
    rows: Dict[str, Dict[str, Any]] = {}
    report: Dict[str, Any] = {"input_size": size, "batch": 1, "threads": 1, "rows": rows}

    print(f"building exports of ReActNet-A at {size}px ...", flush=True)
    t0 = time.perf_counter()
    tvm_res = export_model(student, "tvm", out, target=args.target, batch=1, check_samples=args.equiv_samples)
    onnx_res = export_model(student, "onnx", out, check_samples=min(args.equiv_samples, 64))
    packed_res = export_model(student, "onnx-packed", out, check_samples=0)
    report["build_s"] = time.perf_counter() - t0
    report["sizes"] = {"onnx_bytes": onnx_res["bytes"], "onnx_packed_bytes": packed_res["bytes"],
                       "packed_over_fp32": packed_res["bytes"] / onnx_res["bytes"], "tvm_lib_bytes": tvm_res["bytes"]}
    report["equivalence"] = {"tvm": tvm_res.get("equivalence"), "onnxruntime": onnx_res.get("equivalence")}

    from bssl.export.tvm_export import load_runner

    run_tvm = load_runner(Path(tvm_res["path"]))
    tvm_name = "tvm " + tvm_res["target"]
    fns: Dict[str, Callable[[], Any]] = {tvm_name: lambda: run_tvm(x)}
    xt = torch.from_numpy(x)
    try:
        from bssl.deploy import pack

        packed = pack(student, threads=1)

        def run_kernels():
            with torch.no_grad():
                return packed(xt)

        fns["bssl.deploy.pack (kernels)"] = run_kernels
    except Exception as exc:  # kernels not built on this machine
        rows["bssl.deploy.pack (kernels)"] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    sess = ort_session(Path(onnx_res["path"]))
    fns["onnxruntime FP32 ReActNet-A"] = lambda: sess.run(["logits"], {"input": x})
    rn = ort_session(resnet18_onnx(out / "resnet18.onnx", size))
    fns["onnxruntime FP32 ResNet-18"] = lambda: rn.run(None, {"input": x})
    print(f"timing {len(fns)} backends interleaved, {args.runs} rounds ...", flush=True)
    rows.update(time_interleaved(fns, args.warmup, args.runs))

    py = None if args.no_lce else larq_env.find_larq_python()
    if py is not None:
        try:
            lce_res = export_model(student, "lce", out, check_samples=min(args.equiv_samples, 16))
            report["sizes"]["tflite_bytes"] = lce_res["bytes"]
            report["equivalence"]["lce"] = lce_res.get("equivalence")
            with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
                fh.write(LCE_TIMER)
            res = larq_env.run_larq(py, [fh.name, lce_res["path"], args.warmup, args.runs])
            os.unlink(fh.name)
            ts = np.asarray([float(v) for v in res.stdout.split()])
            rows["LCE .tflite (x86, own process)"] = _stats(ts)
        except Exception as exc:
            rows["LCE .tflite (x86, own process)"] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    else:
        rows["LCE .tflite (x86, own process)"] = {"error": f"skipped: {larq_env.CREATE_HELP}" if not args.no_lce else "skipped"}

    def run_torch():
        with torch.no_grad():
            return student(xt)

    rows["PyTorch eager ReActNet-A"] = time_interleaved({"t": run_torch}, 1, args.torch_runs)["t"]

    tvm_ms = rows[tvm_name]["p50_ms"]
    kern = rows["bssl.deploy.pack (kernels)"].get("p50_ms")
    rn_ms = rows["onnxruntime FP32 ResNet-18"]["p50_ms"]
    report["targets"] = {
        "tvm_over_kernels": tvm_ms / kern if kern else None,
        "tvm_within_2x_of_kernels": bool(kern and tvm_ms <= 2 * kern),
        "tvm_over_onnxruntime_resnet18": tvm_ms / rn_ms,
        "tvm_faster_than_onnxruntime_resnet18": tvm_ms < rn_ms,
        "by_min": {"tvm_over_kernels": rows[tvm_name]["min_ms"] / rows["bssl.deploy.pack (kernels)"]["min_ms"]
                   if kern else None,
                   "tvm_over_onnxruntime_resnet18": rows[tvm_name]["min_ms"] / rows["onnxruntime FP32 ResNet-18"]["min_ms"]},
    }

    print(f"\nReActNet-A exports, {size}x{size}, batch 1, 1 thread (p50 / p90 / min ms)")
    print(f"{'backend':34s} {'p50':>9s} {'p90':>9s} {'min':>9s}  vs tvm")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:34s} {'-':>9s}  {r['error']}")
        else:
            print(f"{name:34s} {r['p50_ms']:9.2f} {r['p90_ms']:9.2f} {r['min_ms']:9.2f}  {r['p50_ms'] / tvm_ms:6.2f}x")
    s = report["sizes"]
    print(f"\nsizes: onnx {s['onnx_bytes'] / 1e6:.1f} MB, onnx-packed {s['onnx_packed_bytes'] / 1e6:.1f} MB "
          f"({s['packed_over_fp32']:.3f} of FP32), tvm .so {s['tvm_lib_bytes'] / 1e6:.1f} MB"
          + (f", tflite {s['tflite_bytes'] / 1e6:.1f} MB" if "tflite_bytes" in s else ""))
    for k, eq in report["equivalence"].items():
        if eq:
            print(f"equivalence {k}: top-1 {eq['top1_agreement']:.3f}, max rel err {eq['max_rel_error']:.2e}, "
                  f"within 1e-3 {eq['within_tol']:.3f} ({eq['samples']} inputs)")
    t = report["targets"]
    print(f"targets (p50): tvm/kernels = {t['tvm_over_kernels'] and round(t['tvm_over_kernels'], 2)} (<= 2: "
          f"{t['tvm_within_2x_of_kernels']}), tvm/ort-resnet18 = {t['tvm_over_onnxruntime_resnet18']:.2f} "
          f"(< 1: {t['tvm_faster_than_onnxruntime_resnet18']}); by min: {t['by_min']}")
    path = args.json or out / "bench_export.json"
    write_json(path, report)
    print(f"json: {path}")
    print(json.dumps(report["targets"]))
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_export.py"))
