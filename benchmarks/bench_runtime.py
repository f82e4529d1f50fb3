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

    python benchmarks/bench_runtime.py --thread-scaling 1,2 [--runs 60] [--update-doc]

measures only the runtime on ReActNet-A at each thread count instead: the counts are timed in
turn, run by run, in one process (so a load change on a shared machine hits them alike), with the
wall-clock p50 and min, the process CPU time per run (CPU / wall near 1 with 2 threads means the
second thread hardly ran: the machine had no free core) and the Amdahl bound of the runtime's
own split (ops it runs on one thread, from the BSSL_RUNTIME_PROFILE per-op times, against the
ops it divides over threads). --update-doc then replaces the bench_runtime_threads section.
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
ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/model-format.md"
BEGIN, END = "<!-- bench_runtime:begin -->", "<!-- bench_runtime:end -->"
THREADS_BEGIN, THREADS_END = "<!-- bench_runtime_threads:begin -->", "<!-- bench_runtime_threads:end -->"
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


def infer_program() -> Optional[str]:
    import shutil

    exe = shutil.which("bssl-infer")
    if exe is None:
        found = sorted(Path(__file__).resolve().parents[1].glob("build/*/bssl-infer"))
        exe = str(found[0]) if found else None
    return exe


def _profile(exe: str, model_path: str, threads: int, repeat: int) -> List[tuple]:
    """(op kind, one-image CPU ms of the calling thread, threads the op ran on) per op, from
    bssl-infer's BSSL_RUNTIME_PROFILE table."""
    import re
    import subprocess

    res = subprocess.run([exe, model_path, "--repeat", str(repeat), "--threads", str(threads)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "BSSL_RUNTIME_PROFILE": "1"})
    if res.returncode != 0:
        return []
    rows = re.findall(r"^\s*op\s+\d+\s+(\w+)\s.*?([\d.]+) ms\s+(\d+) threads?$", res.stderr, flags=re.M)
    return [(kind, float(ms), int(n)) for kind, ms, n in rows]


def serial_fraction(model_path: str, threads: int = 2, repeat: int = 20) -> Optional[Dict[str, Any]]:
    """Share of the one-thread CPU time in ops that ran on one thread when `threads` were allowed
    (the per-op thread counts of bssl-infer's profile), and the Amdahl bound it sets."""
    exe = infer_program()
    if exe is None:
        return None
    one, many = _profile(exe, model_path, 1, repeat), _profile(exe, model_path, threads, repeat)
    if not one or len(one) != len(many):
        return None
    total = sum(ms for _, ms, _ in one)
    serial_ops = [(k, ms) for (k, ms, _), (_, _, n) in zip(one, many) if n == 1]
    serial = sum(ms for _, ms in serial_ops)
    return {"serial_ms": serial, "total_ms": total, "fraction": serial / total, "threads": threads,
            "serial_ops": sorted({k for k, _ in serial_ops}), "n_serial_ops": len(serial_ops), "n_ops": len(one),
            "caller_ms": {1: total, threads: sum(ms for _, ms, _ in many)}}


def free_parallelism(counts: List[int], seconds: float = 0.3) -> Dict[int, float]:
    """How much compute the machine gives N threads right now: N copies of the kernels'
    register-only XOR-popcount loop started together (ctypes releases the GIL), their total work
    over the wall time, relative to one copy alone. N on free cores; near 1 when other processes
    hold them. Taken right before the runtime's timings, as context for them."""
    import threading

    import bssl.kernels as K

    iters = 1 << 18
    while True:
        t0 = time.perf_counter()
        K.peak_xor_popcount(iters)
        if time.perf_counter() - t0 > seconds / 4:
            break
        iters *= 2
    rate: Dict[int, float] = {}
    for n in counts:
        best = 0.0
        for _ in range(3):
            threads = [threading.Thread(target=K.peak_xor_popcount, args=(iters,)) for _ in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best = max(best, n * iters / (time.perf_counter() - t0))
        rate[n] = best
    return {n: rate[n] / rate[counts[0]] for n in counts}


def thread_scaling(counts: List[int], input_size: int, runs: int, warmup: int, out: Path) -> Dict[str, Any]:
    """The runtime alone on ReActNet-A at each thread count, timed in turn run by run."""
    import numpy as np
    import torch

    import bssl.runtime as rt
    from bssl.bench.machine import describe_machine
    from bssl.deploy.model_file import write_model_file
    from bssl.models import build_model

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{MODEL}-{input_size}.bssl"
    torch.manual_seed(0)
    write_model_file(build_model(MODEL, num_classes=1000, input_size=input_size).eval(), path)
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    load_before = os.getloadavg()
    free = free_parallelism(counts)
    models = {t: rt.load(path, threads=t) for t in counts}
    for t in counts:
        for _ in range(warmup):
            models[t].run(x)
    wall: Dict[int, List[float]] = {t: [] for t in counts}
    cpu: Dict[int, List[float]] = {t: [] for t in counts}
    caller: Dict[int, List[float]] = {t: [] for t in counts}
    for _ in range(runs):
        for t in counts:
            c0, w0, k0 = time.process_time(), time.perf_counter(), time.thread_time()
            models[t].run(x)
            caller[t].append((time.thread_time() - k0) * 1e3)
            wall[t].append((time.perf_counter() - w0) * 1e3)
            cpu[t].append((time.process_time() - c0) * 1e3)
    load_after = os.getloadavg()
    for m in models.values():
        m.close()
    rows = {t: {"p50_ms": float(np.median(wall[t])), "min_ms": float(np.min(wall[t])),
                "cpu_ms": float(np.median(cpu[t])), "cpu_per_wall": float(np.median(np.array(cpu[t]) / np.array(wall[t]))),
                "caller_cpu_ms": float(np.median(caller[t]))}
            for t in counts}
    return {"machine": describe_machine(), "load_before": load_before, "load_after": load_after,
            "settings": {"input_size": input_size, "runs": runs, "warmup": warmup, "counts": counts},
            "file_bytes": path.stat().st_size, "rows": rows, "serial": serial_fraction(str(path), max(counts)),
            "free_parallelism": free}


def threads_markdown(res: Dict[str, Any]) -> str:
    m, st, rows = res["machine"], res["settings"], res["rows"]
    base = rows[st["counts"][0]]
    busy = res["load_before"][0] > max(0.5, m["logical_cpus"] / 4)
    lines = ["## Threads (`benchmarks/bench_runtime.py --thread-scaling`)", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs{', virtualised' if m.get('hypervisor') else ''}. "
             f"Load average {res['load_before'][0]:.1f} before, {res['load_after'][0]:.1f} after"
             f"{' (a busy machine: other processes hold the cores, so a second thread often waits for one)' if busy else ''}.",
             "", f"ReActNet-A, {st['input_size']} px, batch 1, seeded random weights, one process, the thread counts "
             f"timed in turn over {st['runs']} rounds after {st['warmup']} warm-up calls each.", "",
             "| threads | p50 ms | min ms | speed-up (p50) | speed-up (min) | process CPU ms per run | CPU / wall "
             "| calling thread's CPU ms | its share ratio | machine's free parallelism |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    free = {int(k): v for k, v in (res.get("free_parallelism") or {}).items()}
    for t in st["counts"]:
        r = rows[t]
        fp = f"{free[t]:.2f}x" if t in free else ""
        lines.append(f"| {t} | {r['p50_ms']:.2f} | {r['min_ms']:.2f} | {base['p50_ms'] / r['p50_ms']:.2f}x | "
                     f"{base['min_ms'] / r['min_ms']:.2f}x | {r['cpu_ms']:.2f} | {r['cpu_per_wall']:.2f} | "
                     f"{r['caller_cpu_ms']:.2f} | {base['caller_cpu_ms'] / r['caller_cpu_ms']:.2f}x | {fp} |")
    lines += ["", "Calling thread's CPU ms: the CPU time of the thread that calls the runtime, which runs the first "
                  "part of every split op itself and the unsplit ops whole; its ratio is how much of the work "
                  "the other threads took off it, the speed-up free cores would approach (less the wake-ups), "
                  "not a latency measured here."]
    if free:
        lines += ["", "Free parallelism: N copies of the kernels' register-only XOR-popcount loop run together, "
                      "their total throughput over one copy's, measured just before (N on idle cores)."]
    ser = res.get("serial")
    if ser:
        bounds = ", ".join(f"{t} threads {1 / (ser['fraction'] + (1 - ser['fraction']) / t):.2f}x"
                           for t in st["counts"] if t > 1)
        lines += ["", f"The runtime's own split (a model, not a measurement): of {ser['total_ms']:.2f} ms one-thread CPU "
                      f"time per image (bssl-infer's BSSL_RUNTIME_PROFILE), {ser['serial_ms']:.2f} ms "
                      f"({100 * ser['fraction']:.1f}%) is in the {ser['n_serial_ops']} of {ser['n_ops']} ops that ran on "
                      f"one thread with {ser['threads']} allowed ({', '.join(ser['serial_ops']) or 'none'}: too little "
                      f"work to wake a thread for, or the memory-bound classifier); the rest is divided over the "
                      f"threads. Amdahl bound: {bounds} on free cores."]
    return "\n".join(lines) + "\n"


def native_rss(model_path: str, threads: int) -> Optional[Dict[str, Any]]:
    """Peak RSS of the bssl-infer program (no Python at all) running the model, against its own
    peak before it loaded anything (the empty process), both from its VmHWM."""
    import subprocess

    exe = infer_program()
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
    ap.add_argument("--thread-scaling", default=None, metavar="COUNTS",
                    help="time only the runtime at these comma-separated thread counts (e.g. 1,2)")
    args = ap.parse_args(argv)
    from bssl.utils import replace_section

    if args.thread_scaling:
        counts = [int(t) for t in args.thread_scaling.split(",") if t.strip()]
        res = thread_scaling(counts, args.input_size, args.runs, args.warmup, Path(args.out))
        Path(args.out, "bench_runtime_threads.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        md = threads_markdown(res)
        print(md)
        if args.markdown:
            Path(args.markdown).write_text(md)
        if args.update_doc:
            replace_section(ROOT / DOC, THREADS_BEGIN, THREADS_END, md.replace("## ", "### ", 1))
        return 0
    res = run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_runtime.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.update_doc:
        replace_section(ROOT / DOC, BEGIN, END, md.replace("## ", "### ", 1))
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_runtime.py"))
