"""run_benchmarks: every (model, backend) pair prepared here, measured in its own fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tqdm import tqdm

from ..errors import UserError
from ..utils import code_version
from .backends import BACKENDS, PrepareContext, get_backend
from .machine import describe_machine
from .models import ModelRef, parse_model_ref
from .worker import RESULT_TAG

DEFAULT_BACKENDS = ("runtime", "torch", "onnxruntime", "onnxruntime-int8", "kernels", "tvm", "lce")

METHOD = {
    "latency": "wall clock (time.perf_counter) around each single call, after warm-up calls, "
               "in a fresh worker process per (model, backend) with the thread count fixed; "
               "p50/p90/min over the timed runs; throughput = batch / p50 of the larger batch",
    "memory": "peak resident set (Linux VmHWM) of the worker after loading the model and running the batch-1 "
              "calls, minus the peak of a baseline worker of the same backend that imported the same libraries "
              "and allocated the same inputs but loaded no model",
    "bytes": "size on disk of the artifact the backend loads (state dict, ONNX file, TVM library, packed model, tflite)",
    "weights": "registered names are random-initialised (seeded): right for latency and memory, not for accuracy",
}


def _worker_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_worker(backend, job: Dict[str, Any], threads: int, timeout_s: float) -> Dict[str, Any]:
    """Run one job in a fresh process; a crash or time-out comes back as {'error': ...}."""
    try:
        proc = subprocess.run(backend.worker_command(), input=json.dumps(job), capture_output=True, text=True,
                              timeout=timeout_s, env=_worker_env(threads))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"worker exited with code {proc.returncode}: {tail[:300]}"}


def _profile(ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
    """OPs/params from bssl.profile.profile_model when it and a torch model exist."""
    if not ref.is_torch:
        return {}
    try:
        from ..profile import profile_model  # type: ignore[attr-defined]
    except ImportError:
        return {}
    try:
        prof = profile_model(ctx.torch_model(ref), input_size=ctx.input_size)
    except Exception as exc:  # a profiler gap must not hide the timings
        return {"profile_error": f"{type(exc).__name__}: {exc}"[:200]}
    prof = prof if isinstance(prof, dict) else getattr(prof, "__dict__", {})
    return {k: prof[k] for k in ("ops", "bops", "flops", "params", "binary_params", "deployed_bytes") if k in prof}


def _arch(ref: ModelRef, ctx: PrepareContext) -> Dict[str, Any]:
    """Architecture name and width, so targets can find ReActNet-A and ResNet-18 rows."""
    if ref.kind == "registered":
        return {"arch": ref.name, "width": float(ref.options.get("width", 1.0))}
    if ref.kind == "student":
        spec = getattr(ctx.torch_model(ref), "spec", None) or {}
        return {"arch": spec.get("name", ref.name), "width": float(spec.get("width", 1.0))}
    return {"arch": ref.name}


def run_benchmarks(models: Sequence[str], backends: Optional[Sequence[str]] = None, threads: int = 1,
                   input_size: int = 224, runs: int = 30, warmup: int = 5, out_dir: os.PathLike | str = "runs/bench",
                   *, batch_sizes: Sequence[int] = (1, 8), seed: int = 0, strict: bool = False,
                   memory: bool = True, budget_s: float = 60.0, timeout_s: float = 600.0,
                   backend_options: Optional[Dict[str, Dict[str, Any]]] = None,
                   progress: bool = True, _baselines: Optional[Dict[tuple, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Measure every model on every backend; return the report dict (see markdown_table).

    models: registered names (``reactnet-a``, ``resnet18``, ``reactnet-a:width=0.5``) or files
    (student/teacher checkpoints, bssl ONNX/TVM/TFLite exports). backends: names from
    ``bssl.bench.BACKENDS`` (default: all). strict: a backend that is not available here is a
    UserError (the CLI sets it when the user named backends) instead of a row saying so.
    backend_options: per-backend settings, e.g. ``{"tvm-rpc": {"rpc": "host:9090"}}``.
    """
    if not models:
        raise UserError("no model given; pass registered names (reactnet-a, resnet18) or model files")
    if threads < 1 or input_size < 8 or runs < 1 or warmup < 0:
        raise UserError(f"bad bench settings threads={threads} input_size={input_size} runs={runs} warmup={warmup}; "
                        "need threads>=1, input_size>=8, runs>=1, warmup>=0")
    refs = [parse_model_ref(m) for m in models]
    names = list(backends) if backends else [b for b in DEFAULT_BACKENDS if b in BACKENDS]
    chosen = [get_backend(n) for n in names]
    for b, opts in (backend_options or {}).items():
        if b in BACKENDS:
            get_backend(b).configure(**opts)
    unavailable = {b.name: b.availability() for b in chosen}
    if strict:
        for name, why in unavailable.items():
            if why:
                raise UserError(f"backend {name} is not available: {why}")
    for b in chosen:
        if not unavailable[b.name]:
            b.preflight()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = sorted({int(b) for b in batch_sizes})
    ctx = PrepareContext(out_dir, input_size, seed, batch_sizes=batches)
    rows: List[Dict[str, Any]] = []
    # baseline peaks depend on the interpreter, imports, input size and batches only: shareable across calls
    baselines: Dict[tuple, Dict[str, Any]] = {} if _baselines is None else _baselines
    profiles: Dict[str, Dict[str, Any]] = {}
    pairs = [(r, b) for r in refs for b in chosen]
    for ref, backend in tqdm(pairs, desc="bench", unit="run", disable=None if progress else True):
        row: Dict[str, Any] = {"model": ref.label, "model_ref": ref.text, "model_kind": ref.kind,
                               "backend": backend.name, "input_size": input_size, "threads": threads}
        if ref.text not in profiles:
            profiles[ref.text] = {**_arch(ref, ctx), **_profile(ref, ctx)}
        row.update(profiles[ref.text])
        why = unavailable[backend.name] or backend.accepts(ref)
        if why:
            row.update(status="unavailable" if unavailable[backend.name] else "skipped", reason=why)
            rows.append(row)
            continue
        t0 = time.perf_counter()
        try:
            artifact = backend.prepare(ref, ctx)
        except UserError:
            raise
        except Exception as exc:  # an export/compile failure is a result worth reporting
            row.update(status="error", reason=f"prepare failed: {type(exc).__name__}: {exc}"[:300])
            rows.append(row)
            continue
        row["prepare_s"] = round(time.perf_counter() - t0, 2)
        row["bytes"] = int(artifact.get("bytes", 0))
        row["artifact"] = str(artifact.get("path", ""))
        job = {"backend": backend.name, "artifact": artifact, "threads": threads, "input_size": input_size,
               "batches": batches, "warmup": warmup, "runs": runs, "seed": seed, "budget_s": budget_s,
               "mode": "measure"}
        if backend.remote:
            try:
                result = backend.measure(job)
            except UserError:
                raise
            except Exception as exc:  # a device that drops the session is a failed row
                result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            result = run_worker(backend, job, threads, timeout_s)
        if "error" in result:
            row.update(status="error", reason=result["error"])
            rows.append(row)
            continue
        row["status"] = "ok"
        if result.get("endpoint"):
            row["endpoint"] = result["endpoint"]
        row["latency"] = result["latency"]
        b1 = result["latency"][str(batches[0])]
        row.update(p50_ms=b1["p50_ms"], p90_ms=b1["p90_ms"], min_ms=b1["min_ms"], runs=b1["runs"])
        big = result["latency"][str(batches[-1])]
        row["throughput_ips"] = batches[-1] / (big["p50_ms"] / 1e3)
        row["throughput_batch"] = batches[-1]
        if memory and not backend.remote and "peak_rss_kb" in result:
            # backends with the same interpreter and imports share one baseline process
            key = (tuple(backend.worker_command()), tuple(backend.imports), tuple(backend.optional_imports),
                   input_size, tuple(batches), threads)
            if key not in baselines:
                baselines[key] = run_worker(backend, {**job, "mode": "baseline"}, threads, timeout_s)
            base = baselines[key]
            if "peak_rss_kb" in base:
                row["peak_mem_mb"] = max(0.0, (result["peak_rss_kb"] - base["peak_rss_kb"]) / 1024.0)
                row["baseline_rss_mb"] = base["peak_rss_kb"] / 1024.0
        rows.append(row)
    report = {
        "kind": "bench",
        "bssl_version": code_version(),
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe_machine(),
        "settings": {"threads": threads, "input_size": input_size, "runs": runs, "warmup": warmup,
                     "batch_sizes": batches, "seed": seed, "budget_s": budget_s},
        "method": METHOD,
        "rows": rows,
    }
    from .report import evaluate_targets

    report["targets"] = evaluate_targets(report)
    return report
