"""Measurement worker for LCE, run by the Python of the larq virtual environment (.larq-venv).

That environment has TensorFlow and larq-compute-engine but neither torch nor bssl (larq pins
numpy<2), so this file is started by path and imports only numpy, LCE and timing.py (by path).
Same protocol as bssl.bench.worker: a JSON job on stdin, ``BSSL_BENCH_RESULT {json}`` on stdout.
"""

import importlib.util
import json
import os
import sys
import traceback

import numpy as np

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bssl_bench_timing", os.path.join(_here, "timing.py"))
timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timing)

RESULT_TAG = "BSSL_BENCH_RESULT "


def run_job(job):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    size = int(job["input_size"])
    rng = np.random.default_rng(job.get("seed", 0))
    inputs = {int(b): rng.standard_normal((int(b), 3, size, size), dtype=np.float32) for b in job["batches"]}
    out = {"backend": "lce", "rss_imports_kb": timing.peak_rss_kb()}
    if job["mode"] == "baseline":
        out["peak_rss_kb"] = timing.peak_rss_kb()
        return out
    with open(job["artifact"]["path"], "rb") as fh:
        interp = Interpreter(fh.read(), num_threads=int(job["threads"]))
    shape = tuple(interp.input_shapes[0])
    nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
    out["rss_after_load_kb"] = timing.peak_rss_kb()

    def run(x):
        return interp.predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x)

    latency = {}
    for i, b in enumerate(job["batches"]):
        runs = job["runs"] if i == 0 else max(3, job["runs"] // 4)
        latency[str(b)] = timing.time_calls(run, inputs[int(b)], job["warmup"] if i == 0 else min(job["warmup"], 2),
                                            runs, budget_s=job.get("budget_s"))
        if i == 0:
            out["peak_rss_kb"] = timing.peak_rss_kb()
    out["latency"] = latency
    out["input_shape"] = list(shape)
    return out


def main():
    job = json.loads(sys.stdin.read())
    try:
        result = run_job(job)
    except Exception as exc:  # reported as a failed row by the parent
        result = {"error": f"{type(exc).__name__}: {exc}"[:300], "traceback": traceback.format_exc()[-2000:]}
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
