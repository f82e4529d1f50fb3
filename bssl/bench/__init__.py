"""Benchmarks: latency, throughput, peak memory, size and OPs of models on inference backends.

Python API (the CLI `bssl bench` is a thin layer over it)::

    from bssl.bench import run_benchmarks, markdown_table, write_reports
    report = run_benchmarks(["reactnet-a", "resnet18"], ["torch", "onnxruntime"], threads=1,
                            input_size=224, runs=30, warmup=5, out_dir="runs/bench")
    print(markdown_table(report))
    write_reports(report, "runs/bench")
"""

import importlib
from typing import Any

# Imported on first use: the measurement worker imports bssl.bench.worker, and its baseline
# memory should not include modules it never needs.
_EXPORTS = {
    "BACKENDS": "backends", "Backend": "backends", "backend_names": "backends", "get_backend": "backends",
    "describe_machine": "machine", "ModelRef": "models", "parse_model_ref": "models",
    "evaluate_targets": "report", "load_accuracy": "report", "markdown_report": "report",
    "markdown_table": "report", "plot_latency_bars": "report", "plot_latency_vs_accuracy": "report",
    "write_reports": "report", "DEFAULT_BACKENDS": "runner", "run_benchmarks": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
