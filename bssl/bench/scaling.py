"""Cost growth: latency and peak memory of a model vs input size and vs width multiplier.

Each point is an ordinary bench row (fresh worker, batch 1). The plots are log-log with the
least-squares slope per backend: a slope of 2 vs input size means cost grows with the pixel
count; vs width, 2 means it grows with the channel count squared (the conv MACs)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..plotting import pyplot, save_figure
from ..utils import code_version, write_json
from .machine import describe_machine
from .models import parse_model_ref
from .runner import run_benchmarks


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Slope of log(y) against log(x) (least squares); None with fewer than two positive points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    a = np.asarray(pts)
    return float(np.polyfit(a[:, 0], a[:, 1], 1)[0])


def _with_option(model: str, **opts: Any) -> str:
    name, _, rest = model.partition(":")
    items = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    items.update({k: str(v) for k, v in opts.items()})
    return name + ":" + ",".join(f"{k}={v}" for k, v in items.items())


def run_scaling(model: str = "reactnet-a", backends: Sequence[str] = ("kernels", "torch"),
                sizes: Optional[Sequence[int]] = None, widths: Optional[Sequence[float]] = None, threads: int = 1,
                runs: int = 10, warmup: int = 2, out_dir: os.PathLike | str = "runs/bench",
                report_path: Optional[os.PathLike | str] = None, size_sweep_width: float = 1.0,
                width_sweep_size: int = 128, progress: bool = True) -> Dict[str, Any]:
    """Measure the size sweep (at `size_sweep_width`) and the width sweep (at `width_sweep_size`)."""
    sizes = [int(s) for s in (sizes or (32, 64, 96, 128, 160, 224))]
    widths = [float(w) for w in (widths or (0.25, 0.5, 0.75, 1.0))]
    if any(s < 16 for s in sizes) or any(w <= 0 for w in widths):
        raise UserError(f"scaling sizes must be >= 16 and widths > 0, got sizes={sizes} widths={widths}")
    ref = parse_model_ref(model)
    if ref.kind != "registered":
        raise UserError(f"scaling rebuilds the model at each size and width: pass a registered name, not {model!r}")
    out_dir = Path(out_dir)
    points: List[Dict[str, Any]] = []
    baselines: Dict[tuple, Dict[str, Any]] = {}
    # one architecture along each sweep: stem "auto" would switch stems at 96 px and break the slope
    size_stem = ref.options.get("stem") or ("small" if min(sizes) < 64 else "imagenet")
    width_stem = ref.options.get("stem") or ("small" if width_sweep_size < 96 else "imagenet")
    sweeps = [("input_size", s, _with_option(model, width=size_sweep_width, stem=size_stem), s) for s in sizes]
    sweeps += [("width", w, _with_option(model, width=w, stem=width_stem), width_sweep_size) for w in widths]
    for axis, value, spec, size in sweeps:
        rep = run_benchmarks([spec], list(backends), threads=threads, input_size=size, runs=runs, warmup=warmup,
                             out_dir=out_dir / "scaling", batch_sizes=(1,), progress=progress,
                             _baselines=baselines)
        for row in rep["rows"]:
            points.append({"axis": axis, "value": value, "input_size": size, "backend": row["backend"],
                           "status": row["status"], "reason": row.get("reason"), "p50_ms": row.get("p50_ms"),
                           "peak_mem_mb": row.get("peak_mem_mb"), "bytes": row.get("bytes"), "ops": row.get("ops")})
    slopes: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for axis in ("input_size", "width"):
        for b in backends:
            pts = [p for p in points if p["axis"] == axis and p["backend"] == b and p["status"] == "ok"]
            slopes.setdefault(axis, {})[b] = {
                "latency": fit_slope([p["value"] for p in pts], [p["p50_ms"] for p in pts]),
                "memory": fit_slope([p["value"] for p in pts], [p["peak_mem_mb"] for p in pts]),
                "ops": fit_slope([p["value"] for p in pts], [p["ops"] for p in pts]),
            }
    report = {"kind": "bench-scaling", "bssl_version": code_version(), "machine": describe_machine(), "model": model,
              "backends": list(backends), "threads": threads, "runs": runs, "size_sweep_width": size_sweep_width,
              "width_sweep_size": width_sweep_size, "size_sweep_stem": size_stem, "width_sweep_stem": width_stem,
              "points": points, "slopes": slopes}
    plot = plot_scaling(report, out_dir / "scaling.png")
    report["files"] = {"json": str(Path(report_path) if report_path else out_dir / "scaling.json"),
                       **({"plot": str(plot)} if plot else {})}
    write_json(report["files"]["json"], report)
    return report


def plot_scaling(report: Dict[str, Any], path: os.PathLike | str) -> Optional[Path]:
    ok = [p for p in report["points"] if p["status"] == "ok"]
    if not ok:
        return None
    plt = pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    titles = {"input_size": f"input size (width {report['size_sweep_width']:g}, {report.get('size_sweep_stem', '?')} stem)",
              "width": f"width multiplier ({report['width_sweep_size']} px, {report.get('width_sweep_stem', '?')} stem)"}
    for col, axis in enumerate(("input_size", "width")):
        for row, (key, label) in enumerate((("p50_ms", "p50 latency, batch 1 (ms)"), ("peak_mem_mb", "peak memory (MiB)"))):
            ax = axes[row][col]
            for b in report["backends"]:
                pts = sorted((p["value"], p[key]) for p in ok if p["axis"] == axis and p["backend"] == b
                             and p.get(key) and p[key] > 0)
                if not pts:
                    continue
                slope = report["slopes"][axis][b]["latency" if key == "p50_ms" else "memory"]
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", label=f"{b} (slope {slope:.2f})" if slope is not None else b)
            ax.set_xscale("log")
            ax.set_yscale("log")
            lo, hi = (ax.get_xlim(), ax.get_ylim())
            for a, (a0, a1) in ((ax.xaxis, lo), (ax.yaxis, hi)):  # plain numbers, not 2.5x10^2
                a.set_major_formatter(ScalarFormatter())
                # minor labels only on short ranges, where there would be no major tick to read
                a.set_minor_formatter(ScalarFormatter() if a1 / max(a0, 1e-12) < 30 else NullFormatter())
            ax.tick_params(which="minor", labelsize=7)
            ax.set_xlabel(titles[axis])
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"cost growth of {report['model']}, {report['threads']} thread(s), log-log with fitted slopes")
    return save_figure(fig, path)


def scaling_markdown(report: Dict[str, Any]) -> str:
    lines = ["| sweep | value | backend | p50 ms | peak MiB | OPs | note |", "|---|---|---|---|---|---|---|"]
    for p in report["points"]:
        f = lambda v, d=3: "-" if v is None else f"{v:.{d}g}"  # noqa: E731
        note = "" if p["status"] == "ok" else f"{p['status']}: {(p.get('reason') or '')[:80]}".replace("|", "/")
        lines.append(f"| {p['axis']} | {p['value']:g} | {p['backend']} | {f(p['p50_ms'])} | {f(p['peak_mem_mb'])} | "
                     f"{f(p['ops'])} | {note} |")
    lines += ["", "| sweep | backend | latency slope | memory slope | OPs slope |", "|---|---|---|---|---|"]
    for axis, per in report["slopes"].items():
        for b, s in per.items():
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {axis} | {b} | {f(s['latency'])} | {f(s['memory'])} | {f(s['ops'])} |")
    return "\n".join(lines) + "\n"
