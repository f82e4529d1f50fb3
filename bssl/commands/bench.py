"""`bssl bench`: latency, throughput, peak memory, size and OPs of models on inference backends.

    bssl bench MODEL... [--backend B ...] [--threads N] [--input-size S] [--report PATH]
    bssl bench [MODEL...] --import-json board.json [--label "pi4"]   rows from bssl-infer --json elsewhere
    bssl bench layers [--threads N] [--report PATH]          per-layer table of ReActNet-A
    bssl bench scaling [MODEL] [--sizes ...] [--widths ...]  cost growth vs input size and width
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from . import add_preset_arguments, add_report_argument, config_from_args

HELP = "benchmark models on backends (latency p50/p90/min, throughput, peak memory, size, OPs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="registered names (reactnet-a, reactnet-a:width=0.5, resnet18) or files (student/teacher .pt, "
                        "bssl .onnx/.so/.tflite/.bssl exports; a .bssl file runs on the runtime backend at its own input size); or the word `layers` (per-layer table) or `scaling` "
                        "(cost vs input size and width)")
    p.add_argument("--backend", dest="backends", action="append", default=None, metavar="NAME",
                   help="backend to measure, repeatable or comma-separated (default: [bench].backends of the preset); "
                        "`bssl bench --list-backends x` lists them")
    p.add_argument("--import-json", dest="imports", action="append", default=None, metavar="FILE",
                   help="add rows measured elsewhere: the JSON of `bssl-infer MODEL --repeat K --json` run on a "
                        "board (docs/arm.md); repeatable; alone it tabulates just those")
    p.add_argument("--label", dest="labels", action="append", default=None, metavar="NAME",
                   help="backend column of the --import-json rows, one per file in order (default: bssl-infer "
                        "(<the board's uname -m>))")
    p.add_argument("--list-backends", action="store_true", help="list backends and whether they are available, then exit")
    p.add_argument("--threads", type=int, default=None, help="threads per backend (default [bench].threads)")
    p.add_argument("--input-size", type=int, default=None, help="input height = width (default [bench].input_size)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per batch size (default [bench].runs)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default [bench].warmup)")
    p.add_argument("--batch", type=int, default=None, help="larger batch for throughput (default [bench].batch)")
    p.add_argument("--no-memory", action="store_true", help="skip the baseline process of the peak-memory measurement")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for artifacts, report and plots")
    p.add_argument("--accuracy-report", type=Path, default=None,
                   help="JSON with accuracy per model (a run report) for the latency-vs-accuracy plot")
    p.add_argument("--rpc", default=None, metavar="HOST:PORT", help="time the tvm-rpc backend on a TVM RPC server")
    p.add_argument("--tracker", default=None, metavar="HOST:PORT", help="TVM RPC tracker (with --key)")
    p.add_argument("--key", default=None, help="device key at the tracker")
    p.add_argument("--rpc-target", default=None,
                   help="TVM target of the remote device (e.g. aarch64, armv7, x86-64; default [bench].rpc_target)")
    p.add_argument("--sizes", default=None, help="scaling: comma-separated input sizes (default [bench].scaling_sizes)")
    p.add_argument("--widths", default=None, help="scaling: comma-separated width multipliers (default [bench].scaling_widths)")
    add_report_argument(p)
    add_preset_arguments(p)


def _split(values):
    out = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _floats(text, what):
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{what} {text!r} must be comma-separated numbers, e.g. 32,64,128") from None


def run(args: argparse.Namespace) -> int:
    from .. import bench

    cfg = config_from_args(args)["bench"]
    if args.list_backends:
        for name in bench.backend_names():
            b = bench.get_backend(name)
            why = b.availability()
            print(f"{name:18s} {b.description:40s} {'available' if why is None else 'unavailable: ' + why}")
        return 0
    threads = args.threads if args.threads is not None else int(cfg["threads"])
    input_size = args.input_size if args.input_size is not None else int(cfg["input_size"])
    runs = args.runs if args.runs is not None else int(cfg["runs"])
    warmup = args.warmup if args.warmup is not None else int(cfg["warmup"])
    batch = args.batch or int(cfg["batch"])
    out = Path(args.out)
    imported = _imported_rows(args)
    if not args.models:
        if not imported:
            raise UserError("name a model to benchmark (e.g. reactnet-a) or pass --import-json FILE")
        return _imported_only(args, imported, out)
    if args.models[0] == "layers":
        return _layers(args, threads, runs, input_size, out)
    if args.models[0] == "scaling":
        from ..bench.scaling import run_scaling, scaling_markdown

        sizes = [int(x) for x in _floats(args.sizes, "sizes")] if args.sizes else cfg["scaling_sizes"]
        widths = _floats(args.widths, "widths") if args.widths else cfg["scaling_widths"]
        backends = _split(args.backends) or cfg["scaling_backends"]
        rep = run_scaling(args.models[1] if len(args.models) > 1 else "reactnet-a", backends=backends,
                          sizes=sizes, widths=widths, threads=threads, runs=runs, warmup=warmup, out_dir=out,
                          report_path=args.report)
        print(scaling_markdown(rep))
        return 0
    explicit = _split(args.backends)
    backends = explicit or list(cfg["backends"])
    options = {}
    if args.rpc or args.tracker:
        if args.tracker and not args.key:
            raise UserError("--tracker needs --key naming the device kind registered at the tracker")
        options["tvm-rpc"] = {"rpc": args.rpc, "tracker": args.tracker, "key": args.key,
                              "target": args.rpc_target or cfg["rpc_target"],
                              "timeout_s": float(cfg["rpc_timeout_s"])}
        if "tvm-rpc" not in backends:
            backends.append("tvm-rpc")
    accuracy = bench.load_accuracy(args.accuracy_report) if args.accuracy_report else None
    report = bench.run_benchmarks(args.models, backends, threads=threads, input_size=input_size, runs=runs,
                                  warmup=warmup, out_dir=out, batch_sizes=(1, batch), strict=bool(explicit),
                                  memory=not args.no_memory, budget_s=float(cfg["budget_s"]),
                                  backend_options=options)
    report["rows"] = report["rows"] + imported
    files = bench.write_reports(report, out, json_path=args.report, accuracy=accuracy)
    print(bench.markdown_table(report))
    print("wrote " + ", ".join(files.values()))
    return 0


def _imported_rows(args) -> list:
    from ..bench.backends.runtime import infer_json_row

    files, labels = list(args.imports or []), list(args.labels or [])
    if len(labels) > len(files):
        raise UserError(f"{len(labels)} --label values for {len(files)} --import-json files; give one label per file")
    if files and args.models and args.models[0] in ("layers", "scaling"):
        raise UserError(f"--import-json adds rows to the model table, not to `bssl bench {args.models[0]}`")
    return [infer_json_row(f, labels[i] if i < len(labels) else None) for i, f in enumerate(files)]


def _imported_only(args, rows, out) -> int:
    """The table of imported rows alone (nothing is measured here)."""
    from .. import bench
    from ..bench.machine import describe_machine

    def one(key):
        vals = list(dict.fromkeys(str(r[key]) for r in rows))
        return vals[0] if len(vals) == 1 else " / ".join(vals)

    settings = {"threads": one("threads"), "input_size": one("input_size"), "runs": one("runs"), "warmup": 0,
                "batch_sizes": [1]}
    report = {"kind": "bench", "imported_only": True, "machine": describe_machine(), "settings": settings, "rows": rows}
    files = bench.write_reports(report, out, json_path=args.report)
    print(bench.markdown_table(report))
    print("wrote " + ", ".join(files.values()))
    return 0


def _layers(args, threads, runs, input_size, out) -> int:
    from ..bench.layers import layer_report
    from ..bench.models import parse_model_ref

    ref = parse_model_ref(args.models[1]) if len(args.models) > 1 else None
    if ref is not None and ref.kind != "registered":
        raise UserError(f"`bssl bench layers` takes a registered student name (e.g. reactnet-a:width=0.5), not {ref.text!r}")
    rep = layer_report(threads=threads, runs=min(runs, 15), out_dir=out, report_path=args.report,
                       backends=_split(args.backends) or None, model=ref.name if ref else "reactnet-a",
                       input_size=input_size, width=float(ref.options.get("width", 1.0)) if ref else 1.0)
    print(rep["markdown"])
    print("wrote " + ", ".join(rep["files"].values()))
    return 0
