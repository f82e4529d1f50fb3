"""Cost growth of a model: latency and peak memory vs input size and vs width multiplier.

    python benchmarks/bench_scaling.py [--model reactnet-a] [--backends kernels torch]
                                       [--sizes 32 64 96 128 160 224] [--widths 0.25 0.5 0.75 1.0]

Writes scaling.json and scaling.png (log-log, least-squares slope per backend) into --out and
prints the points and slopes. Every point is a fresh worker process at batch 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="reactnet-a")
    ap.add_argument("--backends", nargs="+", default=["kernels", "torch"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96, 128, 160, 224])
    ap.add_argument("--widths", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--size-sweep-width", type=float, default=1.0, help="width multiplier of the size sweep")
    ap.add_argument("--width-sweep-size", type=int, default=128, help="input size of the width sweep")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-scaling")


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bssl.bench.scaling import run_scaling, scaling_markdown

    report = run_scaling(args.model, args.backends, sizes=args.sizes, widths=args.widths, threads=args.threads,
                         runs=args.runs, warmup=args.warmup, out_dir=args.out,
                         size_sweep_width=args.size_sweep_width, width_sweep_size=args.width_sweep_size)
    print(scaling_markdown(report))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_scaling.py"))
