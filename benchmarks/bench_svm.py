"""Time the VOC07 SVM sweep and the few-shot sweep on VOC-sized features (default 5k x 1024).

Features are synthetic but shaped like a network's: non-negative (post-ReLU average pool),
multi-label with ~1.5 classes per image over 20 classes, a few "difficult" flags. Prints a table
and writes JSON. Usage:

    python benchmarks/bench_svm.py                       # 5000 train, 2500 test, 1024-d, all cores
    python benchmarks/bench_svm.py --jobs 1 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bssl.eval.features import Features
from bssl.eval.fewshot import fewshot_protocol
from bssl.eval.svm import svm_protocol
from bssl.utils import write_json


def make_features(n: int, dim: int, classes: int, seed: int, centres: np.ndarray) -> Features:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, classes)) < 1.5 / classes).astype(np.float32)
    empty = targets.sum(1) == 0
    targets[empty, rng.integers(classes, size=int(empty.sum()))] = 1
    x = np.maximum(targets @ centres + rng.normal(size=(n, dim)) * 1.5, 0).astype(np.float32)
    difficult = (rng.random((n, classes)) < 0.05) & (targets > 0)
    return Features(x, targets, [f"class{i}" for i in range(classes)], True, difficult)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--test", type=int, default=2500)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--costs", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0])
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 96])
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--selection", default="test", choices=["test", "full", "cv"])
    p.add_argument("--signal", type=float, default=0.25, help="class-centre scale against unit noise (difficulty)")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    centres = np.random.default_rng(123).normal(size=(args.classes, args.dim)) * args.signal
    train = make_features(args.train, args.dim, args.classes, 0, centres)
    test = make_features(args.test, args.dim, args.classes, 1, centres)
    rows = []
    t0, c0 = time.perf_counter(), time.process_time()
    svm = svm_protocol(train, test, costs=args.costs, n_jobs=args.jobs)
    rows.append(("svm (3-fold CV sweep)", time.perf_counter() - t0, svm["value"],
                 args.classes * (len(args.costs) * 3 + 1), time.process_time() - c0))
    t0, c1 = time.perf_counter(), time.process_time()
    few = fewshot_protocol(train, test, ks=args.k, samples=args.samples, costs=args.costs, n_jobs=args.jobs,
                           cost_selection=args.selection)
    n_fits = {"test": len(args.costs), "full": 1, "cv": len(args.costs) * 3 + 1}[args.selection]
    rows.append((f"fewshot ({args.selection})", time.perf_counter() - t0, few["value"],
                 len(few["details"]["per_k"]) * args.samples * args.classes * n_fits, time.process_time() - c1))
    total = sum(r[1] for r in rows)
    print(f"{args.train} train / {args.test} test x {args.dim}-d, {args.classes} classes, costs {args.costs}, "
          f"jobs {args.jobs} on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    # the fits run on threads of this process, so CPU seconds are the whole work: on a shared machine they
    # are the load-independent number (idle wall time on n cores is about CPU / n)
    print("| step | wall s | CPU s (all threads) | mAP (%) | SVM fits (approx.) |\n|---|---|---|---|---|")
    for name, sec, val, fits, cpu in rows:
        print(f"| {name} | {sec:.1f} | {cpu:.1f} | {100 * val:.2f} | {fits} |")
    print(f"| total | {total:.1f} | {sum(r[4] for r in rows):.1f} | | |")
    print("few-shot mAP per k: " + ", ".join(f"k={k}: {100 * r['mAP_mean']:.1f}±{100 * r['mAP_std']:.1f}"
                                             for k, r in few["details"]["per_k"].items()))
    if args.json:
        write_json(args.json, {"args": vars(args), "seconds": {r[0]: r[1] for r in rows}, "cpu_seconds": {r[0]: r[4] for r in rows}, "total_seconds": total,
                               "svm_mAP": svm["value"], "fewshot": few["details"]["per_k"],
                               "load_average": os.getloadavg()[0]})


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_svm.py"))
