"""Regenerate the full CPU comparison: backends table, targets, cost growth, per-layer table, plots,
and the results page docs/results-cpu.md, in one bounded run (about 10 minutes on a quiet 2-core CPU).

    python benchmarks/run_all.py                 # the real thing: 224 px, 1 thread
    python benchmarks/run_all.py --quick         # a 1-2 minute smoke version (64 px), doc under --out

Numbers are measured here and now, side by side in one run; nothing is copied from elsewhere.
Sections that cannot run on this machine (e.g. no compiled kernels, no .larq-venv) are reported
as such in the page instead of stopping the run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_backends  # noqa: E402
import bench_runtime  # noqa: E402


def _section(name: str, fn, timings: Dict[str, float], notes: List[str]):
    print(f"\n=== {name} ===", flush=True)
    t0 = time.perf_counter()
    try:
        return fn()
    except (Exception, SystemExit) as exc:  # one section failing must not lose the others
        msg = f"{name}: not measured ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
        print(msg, file=sys.stderr)
        traceback.print_exc()
        notes.append(msg)
        return None
    finally:
        timings[name] = time.perf_counter() - t0


def _copy_plot(src: Optional[str], doc_dir: Path, name: str) -> Optional[str]:
    if not src or not Path(src).is_file():
        return None
    doc_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, doc_dir / name)
    return f"{doc_dir.name}/{name}"


def small_student_vs_teacher(args, out: Path) -> Dict[str, Any]:
    """The `cpu` preset's student (ReActNet-A x0.25, small stem) in the native runtime against the onnxruntime int8
    build of its FP teacher (ResNet-18) at the preset's 32 px, batch 1: the pair in `bssl run`'s report."""
    from bssl.bench.runner import run_benchmarks

    student = "reactnet-a:width=0.25,stem=small"
    rep = run_benchmarks([student, "resnet18"], ["runtime", "onnxruntime-int8"], threads=args.threads, input_size=32,
                         runs=20 if args.quick else 200, warmup=5 if args.quick else 50, out_dir=out / "small",
                         batch_sizes=(1,), seed=0, budget_s=5.0 if args.quick else 20.0, progress=False)
    rows = {r["backend"]: r for r in rep["rows"] if r.get("status") == "ok"}
    rt, i8 = rows.get("runtime"), rows.get("onnxruntime-int8")
    return {"student": student, "teacher": "resnet18", "runtime": rt, "int8": i8,
            "speedup": i8["p50_ms"] / rt["p50_ms"] if rt and i8 else None}


def small_markdown(res: Dict[str, Any]) -> str:
    rt, i8, sp = res["runtime"], res["int8"], res["speedup"]
    if sp is None:
        return "not measured (a backend failed; see notes)"
    return "\n".join([
        "| model | backend | p50 ms | min ms | file MB |", "|---|---|---|---|---|",
        f"| {res['student']} (cpu-preset student) | runtime | {rt['p50_ms']:.3f} | {rt['min_ms']:.3f} | "
        f"{(rt.get('bytes') or 0) / 1e6:.2f} |",
        f"| {res['teacher']} (its FP teacher) | onnxruntime-int8 | {i8['p50_ms']:.3f} | {i8['min_ms']:.3f} | "
        f"{(i8.get('bytes') or 0) / 1e6:.2f} |", "",
        f"Target: the deployed student faster than the int8 build of its own teacher: {sp:.2f}x "
        f"({'met' if sp > 1 else 'NOT met'})."])


def render_page(backends: Optional[Dict[str, Any]], scaling: Optional[Dict[str, Any]], layers: Optional[Dict[str, Any]],
                plots: Dict[str, str], timings: Dict[str, float], notes: List[str], args,
                runtime: Optional[Dict[str, Any]] = None, small: Optional[Dict[str, Any]] = None) -> str:
    from bssl.bench import describe_machine, markdown_table
    from bssl.bench.runner import METHOD
    from bssl.bench.scaling import scaling_markdown
    from bssl.utils import code_version

    m = (backends or {}).get("machine") or describe_machine()
    cmd = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    out = [
        "# bssl on this machine's CPU", "",
        f"Regenerate with `{cmd}` ("
        + (f"total {sum(timings.values()) / 60:.1f} min this time). " if timings else "page re-rendered from saved JSON). ")
        + 
        f"bssl {(backends or {}).get('bssl_version') or code_version()}, measured "
        f"{(backends or {}).get('measured_utc') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        "## Machine", "",
        f"- CPU: {m.get('cpu')} ({m.get('arch')}, {m.get('logical_cpus')} logical CPUs"
        f"{', virtual machine' if m.get('hypervisor') else ''})",
        f"- SIMD flags that matter here: {' '.join(m.get('simd_flags', [])) or '-'}",
        f"- threads used: {args.threads}; OS {m.get('os')}; Python {m.get('python')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
        "",
        "Timings are wall clock. On a shared or busy machine they are noisy; compare rows of one run only.",
        "",
        "## Backends side by side", "",
    ]
    if backends:
        out += [markdown_table(backends), ""]
        if plots.get("latency"):
            out += [f"![latency per backend]({plots['latency']})", ""]
        if plots.get("accuracy"):
            out += [f"![latency vs accuracy]({plots['accuracy']})", ""]
    else:
        out += ["not measured (see notes)", ""]
    # the native runtime's own section: floor, ratios and its targets, all from one run
    out += ["## Native runtime (model.bssl) against int8 and the floor", ""]
    if runtime:
        out += [bench_runtime.markdown(runtime).replace("## Native runtime benchmark (`benchmarks/bench_runtime.py`)\n\n",
                                                        ""), ""]
    else:
        out += ["not measured (see notes)", ""]
    out += ["## The `cpu` preset's student at 32 px against its teacher's int8 build", ""]
    out += [small_markdown(small), ""] if small else ["not measured (see notes)", ""]
    out += ["## Cost growth (latency and memory vs input size and width)", ""]
    if scaling:
        out += [f"{scaling['model']}, batch 1; size sweep at width {scaling['size_sweep_width']:g} with the "
                f"{scaling.get('size_sweep_stem', '?')} stem throughout (the ImageNet stem needs >= 64 px), width sweep at "
                f"{scaling['width_sweep_size']} px ({scaling.get('width_sweep_stem', '?')} stem). Slopes are log-log least "
                "squares (2 = grows with pixels / channels²). The torch rows of the student binarise their float "
                "weights on every call, a fixed cost that flattens their slope.",
                "", scaling_markdown(scaling), ""]
        if plots.get("scaling"):
            out += [f"![cost growth]({plots['scaling']})", ""]
    else:
        out += ["not measured (see notes)", ""]
    out += ["## Per-layer binary convolutions (benchmarks/bench_layers.py)", ""]
    out += [layers["markdown"], ""] if layers else ["not measured (see notes)", ""]
    out += ["## Method", ""] + [f"- {k}: {v}" for k, v in METHOD.items()]
    out += ["- targets: computed from the rows above (best of the packed backends `runtime`/`kernels`/`tvm` for ReActNet-A "
            "against the named reference row); 'not measured' when a row is missing, never assumed", ""]
    out += ["## Run notes", ""] + [f"- {k}: {v:.0f} s" for k, v in timings.items()] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _render_only(args, out: Path, doc: Path) -> int:
    import json

    from bssl.bench import evaluate_targets, write_reports
    from bssl.utils import atomic_path

    def read(path: Path):
        return json.loads(path.read_text()) if path.is_file() else None

    backends = read(out / "backends" / "bench.json")
    if backends is None:
        print(f"error: no {out / 'backends' / 'bench.json'}; run without --render-only first", file=sys.stderr)
        return 2
    backends["targets"] = evaluate_targets(backends)  # with the current target rules
    backends["files"] = write_reports(backends, out / "backends")
    scaling = read(out / "scaling.json")
    layers = read(out / "layers.json")
    if layers is not None:
        from bssl.bench.layers import layers_markdown

        layers["markdown"] = layers_markdown(layers)
    doc_dir = doc.parent / doc.stem
    plots = {k: v for k, v in {
        "latency": _copy_plot(backends["files"].get("latency_plot"), doc_dir, "latency.png"),
        "scaling": _copy_plot((scaling or {}).get("files", {}).get("plot"), doc_dir, "scaling.png"),
    }.items() if v}
    page = render_page(backends, scaling, layers, plots, {}, ["page re-rendered from the JSON of an earlier run"], args,
                       runtime=read(out / "runtime" / "bench_runtime.json"))
    with atomic_path(doc) as tmp:
        tmp.write_text(page)
    print(f"wrote {doc}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few runs: checks the pipeline in 1-2 minutes")
    ap.add_argument("--out", default="runs/bench-all", help="folder for artifacts, JSON and plots")
    ap.add_argument("--doc", default=None, help="results page (default docs/results-cpu.md; with --quick: OUT/results-cpu.md)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--accuracy-report", default=None, help="JSON with accuracy per model (a run report)")
    ap.add_argument("--render-only", action="store_true",
                    help="measure nothing: rebuild the page from the JSON files a previous run left in --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = Path(args.doc) if args.doc else (out / "results-cpu.md" if args.quick else ROOT / "docs" / "results-cpu.md")
    q = args.quick
    timings: Dict[str, float] = {}
    notes: List[str] = []

    if args.render_only:
        return _render_only(args, out, doc)

    bargs = SimpleNamespace(models=bench_backends.DEFAULT_MODELS, backends=bench_backends.DEFAULT_BACKENDS,
                            threads=args.threads, input_size=64 if q else 224, runs=5 if q else 30,
                            warmup=1 if q else 5, batch=2 if q else 8, budget=5.0 if q else 20.0,
                            accuracy_report=args.accuracy_report, out=str(out / "backends"))
    backends = _section("backends", lambda: bench_backends.run(bargs), timings, notes)
    rargs = SimpleNamespace(threads=args.threads, input_size=64 if q else 224, runs=10 if q else 100,
                            warmup=2 if q else 20, budget=5.0 if q else 40.0, out=str(out / "runtime"))
    runtime = _section("runtime", lambda: bench_runtime.run(rargs), timings, notes)
    small = _section("small", lambda: small_student_vs_teacher(args, out), timings, notes)
    if runtime is not None:
        import json

        (out / "runtime").mkdir(parents=True, exist_ok=True)
        (out / "runtime" / "bench_runtime.json").write_text(json.dumps(runtime, indent=2, default=str) + "\n")

    scaling = None
    if not args.skip_scaling:
        from bssl.bench.scaling import run_scaling

        scaling = _section("scaling", lambda: run_scaling(
            "reactnet-a", ["kernels", "torch"], sizes=[32, 64] if q else [32, 64, 96, 128, 160, 224],
            widths=[0.25, 0.5] if q else [0.25, 0.5, 0.75, 1.0], threads=args.threads, runs=3 if q else 10,
            warmup=1 if q else 2, out_dir=out, width_sweep_size=32 if q else 128), timings, notes)

    layers = None
    if not args.skip_layers:
        from bssl.bench.layers import layer_report

        layers = _section("layers", lambda: layer_report(
            threads=args.threads, runs=2 if q else 15, out_dir=out, input_size=64 if q else 224,
            width=0.5 if q else 1.0), timings, notes)

    doc_dir = doc.parent / doc.stem
    plots = {k: v for k, v in {
        "latency": _copy_plot((backends or {}).get("files", {}).get("latency_plot"), doc_dir, "latency.png"),
        "accuracy": _copy_plot((backends or {}).get("files", {}).get("accuracy_plot"), doc_dir, "latency-accuracy.png"),
        "scaling": _copy_plot((scaling or {}).get("files", {}).get("plot"), doc_dir, "scaling.png"),
    }.items() if v}
    from bssl.utils import atomic_path

    page = render_page(backends, scaling, layers, plots, timings, notes, args, runtime=runtime, small=small)
    with atomic_path(doc) as tmp:
        tmp.write_text(page)
    print(f"\nwrote {doc} ({sum(timings.values()) / 60:.1f} min)")
    return 0 if backends else 1


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "run_all.py"))
