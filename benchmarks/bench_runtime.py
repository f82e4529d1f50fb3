"""Native runtime benchmark: ReActNet-A at 224, batch 1, against bssl.kernels and onnxruntime.

    python benchmarks/bench_runtime.py [--threads 1] [--runs 50] [--warmup 10] [--out runs/bench-runtime]
                                       [--markdown FILE] [--update-doc]

Rows (each backend in a fresh worker process, bssl.bench.run_benchmarks): the native runtime on
model.bssl, today's `kernels` backend (packed convs, float glue in torch), onnxruntime int8
(static QDQ) and FP32 ResNet-18. Seeded random weights: latency and memory do not depend on them.
Beside the table: the floor = ReActNet-A's BOPs / the measured XOR-popcount peak of this CPU
(bssl.kernels.peak_xor_popcount) + its FP MACs / a measured FP32 peak (single-thread SGEMM), the
model file size and the peak RSS above a baseline process that imported the same libraries.
Prints the machine and the load average: on a busy machine the wall-clock numbers mean little.
--markdown writes the section to a file; --update-doc replaces the measured section of
docs/model-format.md (between its bench_runtime markers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

MODEL = "reactnet-a"
BACKENDS = ["runtime", "kernels", "onnxruntime-int8", "onnxruntime"]
DOC = "docs/model-format.md"
BEGIN, END = "<!-- bench_runtime:begin -->", "<!-- bench_runtime:end -->"
TARGETS = {"vs_int8": 1.3, "vs_kernels": 2.0, "vs_floor": 1.5, "file_mb": 8.0, "rss_mib": 24.0}


def xor_popcount_peak(seconds: float = 0.5) -> Dict[str, Any]:
    """Binary MACs per second of the kernels' register-only XOR+popcount loop (one thread)."""
    import bssl.kernels as K

    iters = 1 << 20
    while True:
        t0 = time.thread_time()
        ops, _ = K.peak_xor_popcount(iters)
        dt = time.thread_time() - t0
        if dt > seconds / 4:
            break
        iters *= 4
    best = 0.0
    for _ in range(3):
        t0 = time.thread_time()
        ops, _ = K.peak_xor_popcount(iters)
        best = max(best, ops / (time.thread_time() - t0))
    return {"bit_macs_per_s": best, "isa": K.get_isa()}


def fp32_peak(n: int = 1024) -> Dict[str, Any]:
    """FP32 multiply-adds per second of a single-thread SGEMM (the FMA units, as BLAS drives them)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(1):
        a @ b
        best = 0.0
        for _ in range(5):
            t0 = time.thread_time()
            a @ b
            best = max(best, n ** 3 / (time.thread_time() - t0))
    return {"macs_per_s": best}


def floor_ms(input_size: int) -> Dict[str, Any]:
    from bssl.profile import profile

    p = profile(MODEL, input_size=input_size)
    bops, flops = float(p["bops"]), float(p["flops"])  # binary MACs; FP MACs (conv + linear)
    xp, fp = xor_popcount_peak(), fp32_peak()
    binary = bops / xp["bit_macs_per_s"] * 1e3
    fpart = flops / fp["macs_per_s"] * 1e3
    return {"bops": bops, "fp_macs": flops, "xor_popcount_peak_T": xp["bit_macs_per_s"] / 1e12, "isa": xp["isa"],
            "fp32_peak_G": fp["macs_per_s"] / 1e9, "binary_ms": binary, "fp_ms": fpart, "floor_ms": binary + fpart}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bssl.bench.machine import describe_machine
    from bssl.bench.runner import run_benchmarks

    load_before = os.getloadavg()
    models = [MODEL, "resnet18"]
    report = run_benchmarks(models, BACKENDS, threads=args.threads, input_size=args.input_size, runs=args.runs,
                            warmup=args.warmup, out_dir=args.out, batch_sizes=(1,), seed=0, memory=True,
                            budget_s=args.budget, progress=False)
    flo = floor_ms(args.input_size)
    return {"machine": describe_machine(), "load_before": load_before, "load_after": os.getloadavg(),
            "settings": {"threads": args.threads, "input_size": args.input_size, "runs": args.runs,
                         "warmup": args.warmup},
            "rows": report["rows"], "floor": flo}


def _row(res: Dict[str, Any], model: str, backend: str) -> Optional[Dict[str, Any]]:
    for r in res["rows"]:
        if str(r.get("model", "")).startswith(model) and r.get("backend") == backend and r.get("status") == "ok":
            return r
    return None


def markdown(res: Dict[str, Any]) -> str:
    m, f = res["machine"], res["floor"]
    rt = _row(res, MODEL, "runtime")
    lines = ["## Native runtime benchmark (`benchmarks/bench_runtime.py`)", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['arch']}, SIMD {' '.join(m['simd_flags'])}"
             f"{', virtualised' if m.get('hypervisor') else ''}; {m['os']}; Python {m['python']}; "
             f"onnxruntime {m['versions'].get('onnxruntime')}, torch {m['versions'].get('torch')}. "
             f"Load average {res['load_before'][0]:.1f} before, {res['load_after'][0]:.1f} after "
             f"({'a busy machine: wall-clock latencies are inflated and noisy' if res['load_before'][0] > 1.0 else 'quiet'}).",
             "", f"{res['settings']['input_size']} px, batch 1, {res['settings']['threads']} thread(s), "
             f"p50 over {res['settings']['runs']} runs after {res['settings']['warmup']} warm-up calls, seeded random weights.",
             "", "| model | backend | p50 ms | min ms | peak RSS MiB (above baseline) | file MB | runtime speed-up |",
             "|---|---|---|---|---|---|---|"]
    for model, backend in [(MODEL, "runtime"), (MODEL, "kernels"), ("resnet18", "onnxruntime-int8"),
                           ("resnet18", "onnxruntime")]:
        r = _row(res, model, backend)
        if r is None:
            lines.append(f"| {model} | {backend} | n/a | | | | |")
            continue
        size = r.get("bytes") or r.get("size_bytes") or 0
        mem = r.get("peak_mem_mb")
        sp = f"{r['p50_ms'] / rt['p50_ms']:.2f}x" if rt and backend != "runtime" else ""
        lines.append(f"| {model} | {backend} | {r['p50_ms']:.2f} | {r.get('min_ms', float('nan')):.2f} | "
                     f"{'' if mem is None else f'{mem:.1f}'} | {size / 1e6:.2f} | {sp} |")
    lines += ["", f"Floor: {f['bops']:.3g} BOPs / {f['xor_popcount_peak_T']:.2f} T binary MAC/s ({f['isa']} XOR-popcount "
              f"peak) = {f['binary_ms']:.2f} ms, + {f['fp_macs']:.3g} FP MACs / {f['fp32_peak_G']:.0f} G MAC/s "
              f"(single-thread SGEMM) = {f['fp_ms']:.2f} ms; floor {f['floor_ms']:.2f} ms."]
    if rt:
        checks = []
        i8, kr = _row(res, "resnet18", "onnxruntime-int8"), _row(res, MODEL, "kernels")
        if i8:
            checks.append(("vs ORT int8 ResNet-18", i8["p50_ms"] / rt["p50_ms"], ">=", TARGETS["vs_int8"]))
        if kr:
            checks.append(("vs kernels backend", kr["p50_ms"] / rt["p50_ms"], ">=", TARGETS["vs_kernels"]))
        checks.append(("runtime / floor", rt["p50_ms"] / f["floor_ms"], "<=", TARGETS["vs_floor"]))
        checks.append(("model.bssl MB", (rt.get("bytes") or 0) / 1e6, "<=", TARGETS["file_mb"]))
        if rt.get("peak_mem_mb") is not None:
            checks.append(("peak RSS MiB", rt["peak_mem_mb"], "<=", TARGETS["rss_mib"]))
        lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
        for name, v, op, goal in checks:
            ok = v >= goal if op == ">=" else v <= goal
            lines.append(f"| {name} | {v:.2f} | {op} {goal} | {'yes' if ok else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of timing per backend at most")
    ap.add_argument("--out", default="runs/bench-runtime")
    ap.add_argument("--markdown", default=None, help="also write the Markdown section to this file")
    ap.add_argument("--update-doc", action="store_true",
                    help=f"replace the measured section of {DOC} (between its bench_runtime markers)")
    args = ap.parse_args(argv)
    res = run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_runtime.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.update_doc:
        update_doc(md)
    return 0


def update_doc(md: str, doc: Path = None) -> None:
    """Put `md` between the markers of the doc, keeping everything else."""
    doc = doc or Path(__file__).resolve().parents[1] / DOC
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} section to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{md.replace('## Native runtime benchmark', '### Native runtime benchmark')}{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
