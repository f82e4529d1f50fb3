"""Measurement worker: one fresh process per (backend, model), started by bssl.bench.runner.

Reads a JSON job on stdin, prints one line ``BSSL_BENCH_RESULT {json}`` on stdout.

mode "baseline": import the backend's libraries, allocate the inputs, report peak RSS.
mode "measure":  the same, then load the artifact, run batch 1 (warm-up + timed runs), read the
                 peak RSS (this is the batch-1 inference peak), then time the larger batch.
The parent reports peak memory as measure-peak minus baseline-peak of the same backend, i.e.
what loading and running the model adds to an interpreter that already imported the libraries.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

import numpy as np

from .timing import peak_rss_kb, time_calls

RESULT_TAG = "BSSL_BENCH_RESULT "


def make_inputs(input_size: int, batches, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {int(b): rng.standard_normal((int(b), 3, input_size, input_size), dtype=np.float32) for b in batches}


def run_job(job: dict) -> dict:
    from .backends import get_backend

    backend = get_backend(job["backend"])
    for mod in backend.imports:
        importlib.import_module(mod)
    for mod in backend.optional_imports:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    inputs = make_inputs(job["input_size"], job["batches"], job.get("seed", 0))
    out = {"backend": backend.name, "rss_imports_kb": peak_rss_kb()}
    if job["mode"] == "baseline":
        out["peak_rss_kb"] = peak_rss_kb()
        return out
    fn = backend.load(job["artifact"], int(job["threads"]))
    out["rss_after_load_kb"] = peak_rss_kb()
    latency = {}
    budget = job.get("budget_s")
    for i, b in enumerate(job["batches"]):
        # larger batches cost more per call; fewer timed runs keep the whole run bounded
        runs = job["runs"] if i == 0 else max(3, job["runs"] // 4)
        latency[str(b)] = time_calls(fn, inputs[int(b)], job["warmup"] if i == 0 else min(job["warmup"], 2), runs,
                                     budget_s=budget)
        if i == 0:
            out["peak_rss_kb"] = peak_rss_kb()
    out["latency"] = latency
    return out


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        result = run_job(job)
    except Exception as exc:  # reported to the parent as a failed row, not a crash
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300],
                  "traceback": traceback.format_exc()[-2000:]}
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
