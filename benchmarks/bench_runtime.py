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


def cpu_times(rows: List[Dict[str, Any]], input_size: int, runs: int) -> Dict[str, float]:
    """Median thread CPU time per batch-1 call of each measured backend, in this process.

    With one thread every backend computes on the calling thread, so CPU time leaves out the time
    a busy machine keeps it descheduled (it still includes slower caches and shared cores)."""
    import numpy as np

    from bssl.bench.backends import get_backend

    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    out: Dict[str, float] = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("artifact"):
            continue
        fn = get_backend(r["backend"]).load({"path": r["artifact"], "bytes": r.get("bytes")}, 1)
        for _ in range(5):
            fn(x)
        samples = []
        for _ in range(runs):
            t0 = time.thread_time()
            fn(x)
            samples.append((time.thread_time() - t0) * 1e3)
        out[f"{r['model']}|{r['backend']}"] = float(np.median(samples))
    return out


def native_rss(model_path: str, threads: int) -> Optional[Dict[str, Any]]:
    """Peak RSS of the bssl-infer program (no Python at all) running the model, against its own
    peak before it loaded anything (the empty process), both from its VmHWM."""
    import shutil
    import subprocess

    exe = shutil.which("bssl-infer")
    if exe is None:
        found = sorted(Path(__file__).resolve().parents[1].glob("build/*/bssl-infer"))
        exe = str(found[0]) if found else None
    if exe is None:
        return None
    res = subprocess.run([exe, model_path, "--repeat", "20", "--threads", str(threads), "--json"],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return None
    out = json.loads(res.stdout)
    if out.get("peak_rss_kb", -1) < 0:
        return None
    return {"program": exe, "peak_mib": out["peak_rss_kb"] / 1024, "empty_mib": out["start_rss_kb"] / 1024,
            "above_empty_mib": (out["peak_rss_kb"] - out["start_rss_kb"]) / 1024, "p50_ms": out["p50_ms"]}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bssl.bench.machine import describe_machine
    from bssl.bench.runner import run_benchmarks

    load_before = os.getloadavg()
    models = [MODEL, "resnet18"]
    report = run_benchmarks(models, BACKENDS, threads=args.threads, input_size=args.input_size, runs=args.runs,
                            warmup=args.warmup, out_dir=args.out, batch_sizes=(1,), seed=0, memory=True,
                            budget_s=args.budget, progress=False)
    flo = floor_ms(args.input_size)
    cpu = cpu_times(report["rows"], args.input_size, args.runs) if args.threads == 1 else {}
    rt_row = next((r for r in report["rows"] if r.get("backend") == "runtime" and r.get("status") == "ok"), None)
    native = native_rss(rt_row["artifact"], args.threads) if rt_row else None
    return {"machine": describe_machine(), "load_before": load_before, "load_after": os.getloadavg(),
            "settings": {"threads": args.threads, "input_size": args.input_size, "runs": args.runs,
                         "warmup": args.warmup},
            "rows": report["rows"], "floor": flo, "cpu_ms": cpu, "native_rss": native}


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
             "", "| model | backend | p50 ms | min ms | CPU ms (thread time) | peak RSS MiB (above baseline) | file MB "
             "| runtime speed-up (p50) | (CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    cpu = res.get("cpu_ms", {})
    rt_cpu = cpu.get(f"{rt['model']}|runtime") if rt else None
    for model, backend in [(MODEL, "runtime"), (MODEL, "kernels"), ("resnet18", "onnxruntime-int8"),
                           ("resnet18", "onnxruntime")]:
        r = _row(res, model, backend)
        if r is None:
            lines.append(f"| {model} | {backend} | n/a | | | | | | |")
            continue
        size = r.get("bytes") or r.get("size_bytes") or 0
        mem = r.get("peak_mem_mb")
        c = cpu.get(f"{r['model']}|{backend}")
        sp = f"{r['p50_ms'] / rt['p50_ms']:.2f}x" if rt and backend != "runtime" else ""
        spc = f"{c / rt_cpu:.2f}x" if c and rt_cpu and backend != "runtime" else ""
        lines.append(f"| {model} | {backend} | {r['p50_ms']:.2f} | {r.get('min_ms', float('nan')):.2f} | "
                     f"{'' if c is None else f'{c:.2f}'} | {'' if mem is None else f'{mem:.1f}'} | {size / 1e6:.2f} "
                     f"| {sp} | {spc} |")
    if rt and rt.get("baseline_rss_mb") is not None:
        lines += ["", f"Peak RSS column: each bench worker's peak minus that of a baseline worker of the same backend "
                      f"that imported the same libraries and allocated the input (the runtime's baseline worker: "
                      f"{rt['baseline_rss_mb']:.1f} MiB, the bench harness's interpreter and imports)."]
    nat = res.get("native_rss")
    if nat:
        lines += [f"`bssl-infer` alone (C, no Python): peak RSS {nat['peak_mib']:.1f} MiB running the model, "
                  f"{nat['empty_mib']:.1f} MiB before it loaded anything, so "
                  f"{nat['above_empty_mib']:.1f} MiB above an empty process (the model file it keeps, "
                  f"{(rt.get('bytes') or 0) / 2**20:.1f} MiB, plus the activation arena and the input)."]
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
            checks.append(("peak RSS MiB (bench worker)", rt["peak_mem_mb"], "<=", TARGETS["rss_mib"]))
        if nat:
            checks.append(("peak RSS MiB (bssl-infer above empty)", nat["above_empty_mib"], "<=", TARGETS["rss_mib"]))
        if rt_cpu:  # the same ratios on thread CPU time (what a busy machine distorts least)
            i8c, krc = (cpu.get(f"{r['model']}|{r['backend']}") if r else None for r in (i8, kr))
            checks += [(f"{n} (CPU time)", v, op, g) for n, v, op, g in [
                ("vs ORT int8 ResNet-18", i8c / rt_cpu if i8c else None, ">=", TARGETS["vs_int8"]),
                ("vs kernels backend", krc / rt_cpu if krc else None, ">=", TARGETS["vs_kernels"]),
                ("runtime / floor", rt_cpu / f["floor_ms"], "<=", TARGETS["vs_floor"])] if v is not None]
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
