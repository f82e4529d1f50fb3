"""Side-by-side backend comparison: every model on every backend, one fresh process per pair.

    python benchmarks/bench_backends.py [--models reactnet-a resnet18] [--backends ...] [--threads 1]
                                        [--input-size 224] [--runs 30] [--warmup 5] [--batch 8] [--out DIR]

Prints the Markdown table (latency p50/p90/min at batch 1, throughput at --batch, peak memory,
size on disk, OPs, params) and the targets, and writes bench.json, bench.md and the latency bar
chart into --out. Registered names are random-initialised (fine for latency, not accuracy).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

DEFAULT_MODELS = ["reactnet-a", "resnet18"]
DEFAULT_BACKENDS = ["runtime", "torch", "onnxruntime", "onnxruntime-int8", "kernels", "tvm", "lce"]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--backends", nargs="+", default=DEFAULT_BACKENDS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="larger batch for throughput")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per batch size before a slow backend stops timing")
    ap.add_argument("--accuracy-report", default=None, help="JSON with accuracy per model for the latency-vs-accuracy plot")
    ap.add_argument("--out", default="runs/bench-backends")


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bssl.bench import load_accuracy, markdown_table, run_benchmarks, write_reports

    report = run_benchmarks(args.models, args.backends, threads=args.threads, input_size=args.input_size,
                            runs=args.runs, warmup=args.warmup, out_dir=args.out, batch_sizes=(1, args.batch),
                            budget_s=args.budget)
    acc = load_accuracy(args.accuracy_report) if args.accuracy_report else None
    report["files"] = write_reports(report, args.out, accuracy=acc)
    print(markdown_table(report))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_backends.py"))
