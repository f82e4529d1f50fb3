"""Reports of a bench run: Markdown tables, target checks, JSON and plots."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import UserError
from ..plotting import pyplot, save_figure
from ..utils import atomic_path, write_json

# backends that run the binary network bit-packed (the "bssl backends" of the targets)
PACKED_BACKENDS = ("runtime", "kernels", "tvm", "tvm-packed")
TARGET_MODEL = "reactnet-a"
REFERENCE_MODEL = "resnet18"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1e6:
            return f"{v:.3g}"
        return f"{v:.{digits}g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int) and abs(v) >= 1e6:
        return f"{v:.3g}"
    return str(v)


def markdown_table(report: Dict[str, Any]) -> str:
    """The headline table of a bench report (one row per model and backend), then the targets."""
    s = report.get("settings", {})
    batch = (s.get("batch_sizes") or [1, 8])[-1]
    head = ["model", "backend", "p50 ms", "p90 ms", "min ms", f"img/s @{batch}", "peak MiB", "size MiB", "OPs", "params",
            "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reasons: List[str] = []  # long reasons once, below the table
    for r in report.get("rows", []):
        ok = r.get("status") == "ok"
        note = ""
        if not ok:
            text = f"{r.get('status')}: {r.get('reason', '')}".replace("|", "/")
            if text not in reasons:
                reasons.append(text)
            note = f"{r.get('status')} [{reasons.index(text) + 1}]"
        size = r.get("bytes")
        cells = [
            r["model"], r["backend"],
            _fmt(r.get("p50_ms")) if ok else "-", _fmt(r.get("p90_ms")) if ok else "-",
            _fmt(r.get("min_ms")) if ok else "-", _fmt(r.get("throughput_ips")) if ok else "-",
            _fmt(r.get("peak_mem_mb")), _fmt(size / 2**20) if size else "-",
            _fmt(r.get("ops")), _fmt(r.get("params")),
            note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if reasons:
        out += "\n" + "\n".join(f"[{i + 1}] {t}  " for i, t in enumerate(reasons)) + "\n"
    if s:
        out += (f"\nInput {s.get('input_size')}x{s.get('input_size')}, {s.get('threads')} thread(s), "
                f"latency at batch {(s.get('batch_sizes') or [1])[0]} over {s.get('runs')} runs after "
                f"{s.get('warmup')} warm-up; throughput at batch {batch}.\n")
    targets = report.get("targets") or []
    if targets:
        out += "\n" + targets_table(targets)
    return out


def targets_table(targets: List[Dict[str, Any]]) -> str:
    lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for t in targets:
        met = {True: "yes", False: "NO", None: "not measured"}[t.get("met")]
        lines.append(f"| {t['name']} | {t['goal']} | {t.get('measured', '-')} | {met} |")
    return "\n".join(lines) + "\n"


def _ok_rows(report, arch: str, width: float = 1.0) -> List[Dict[str, Any]]:
    return [r for r in report.get("rows", []) if r.get("status") == "ok" and r.get("arch") == arch
            and float(r.get("width", 1.0)) == width]


def evaluate_targets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's targets, measured side by side in this report; honest about what is missing.

    They are stated for ReActNet-A at 224, batch 1, one thread; other settings are evaluated
    the same way and the settings are printed beside the table.
    """
    students = _ok_rows(report, TARGET_MODEL)
    refs = {r["backend"]: r for r in _ok_rows(report, REFERENCE_MODEL)}
    if not students and not refs:
        return []
    packed = [r for r in students if r["backend"] in PACKED_BACKENDS]
    pool = packed or [r for r in students if r["backend"] != "lce"]
    best = min(pool, key=lambda r: r["p50_ms"]) if pool else None
    who = f"{best['backend']}" + ("" if packed else " (no packed backend measured)") if best else ""
    out: List[Dict[str, Any]] = []

    def ratio_target(name: str, goal: str, other: Optional[Dict[str, Any]], need: float, strict_gt: bool = False):
        if best is None or other is None:
            missing = "ReActNet-A on a bssl backend" if best is None else f"{name.split(' vs ')[-1]}"
            out.append({"name": name, "goal": goal, "measured": f"missing: {missing}", "met": None})
            return
        ratio = other["p50_ms"] / best["p50_ms"]
        met = ratio > need if strict_gt else ratio >= need
        # the ratio of the minima is less sensitive to a busy machine; shown beside, not judged
        min_ratio = other["min_ms"] / best["min_ms"] if best.get("min_ms") and other.get("min_ms") else None
        out.append({"name": name, "goal": goal, "ratio": ratio, "min_ratio": min_ratio, "met": met,
                    "measured": f"{ratio:.2f}x p50 ({best['p50_ms']:.2f} ms {who} vs {other['p50_ms']:.2f} ms)"
                                + (f"; {min_ratio:.2f}x min" if min_ratio else "")})

    ratio_target("speed vs onnxruntime FP32 ResNet-18", ">= 3x faster", refs.get("onnxruntime"), 3.0)
    ratio_target("speed vs onnxruntime int8 ResNet-18", "faster (> 1x)", refs.get("onnxruntime-int8"), 1.0, True)
    lce = next((r for r in students if r["backend"] == "lce"), None)
    ratio_target("speed vs LCE ReActNet-A", ">= 30x faster", lce, 30.0)
    if best is not None and best.get("bytes"):
        # judged on the stricter reading, 8 MB = 8,000,000 bytes; MiB shown beside
        n = best["bytes"]
        others = "".join(f"; {r['backend']} {r['bytes'] / 1e6:.2f} MB" for r in packed
                         if r is not best and r.get("bytes"))
        out.append({"name": "deployed ReActNet-A size", "goal": "< 8 MB (8e6 bytes)", "bytes": n, "met": n < 8e6,
                    "measured": f"{n / 1e6:.2f} MB = {n / 2**20:.2f} MiB ({who}){others}"})
    else:
        out.append({"name": "deployed ReActNet-A size", "goal": "< 8 MB", "measured": "missing", "met": None})
    ref_mem = refs.get("onnxruntime", {}).get("peak_mem_mb") if refs.get("onnxruntime") else None
    if best is not None and best.get("peak_mem_mb") is not None and ref_mem is not None:
        out.append({"name": "peak memory vs FP32 ResNet-18 (onnxruntime)", "goal": "lower",
                    "met": best["peak_mem_mb"] < ref_mem,
                    "measured": f"{best['peak_mem_mb']:.1f} MiB ({who}) vs {ref_mem:.1f} MiB"})
    else:
        out.append({"name": "peak memory vs FP32 ResNet-18 (onnxruntime)", "goal": "lower", "measured": "missing",
                    "met": None})
    return out


def markdown_report(report: Dict[str, Any], title: str = "bssl benchmark") -> str:
    """A full Markdown page: machine, method, the table, targets."""
    m = report.get("machine", {})
    lines = [f"# {title}", "", f"bssl {report.get('bssl_version', '?')}", "", "## Machine", "",
             f"- CPU: {m.get('cpu', '?')} ({m.get('arch', '?')}, {m.get('logical_cpus', '?')} logical CPUs"
             f"{', virtualised' if m.get('hypervisor') else ''})",
             f"- SIMD flags: {' '.join(m.get('simd_flags', [])) or '-'}",
             f"- OS: {m.get('os', '?')}, Python {m.get('python', '?')}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
             "", "## Results", "", markdown_table(report), "", "## Method", ""]
    for key, text in (report.get("method") or {}).items():
        lines.append(f"- {key}: {text}")
    return "\n".join(lines) + "\n"


def plot_latency_bars(report: Dict[str, Any], path: os.PathLike | str) -> Optional[Path]:
    """Batch-1 p50 latency per backend, grouped by model (log scale)."""
    rows = [r for r in report.get("rows", []) if r.get("status") == "ok"]
    if not rows:
        return None
    plt = pyplot()
    import numpy as np

    models = list(dict.fromkeys(r["model"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    width = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(models) + 2), 4.5))
    x = np.arange(len(models))
    for i, b in enumerate(backends):
        vals = [next((r["p50_ms"] for r in rows if r["model"] == m and r["backend"] == b), np.nan) for m in models]
        bars = ax.bar(x + (i - (len(backends) - 1) / 2) * width, vals, width, label=b)
        for rect, v in zip(bars, vals):
            if not np.isnan(v):
                ax.annotate(f"{v:.3g}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=7)
    ax.set_xticks(x, models, rotation=15)
    ax.set_yscale("log")
    s = report.get("settings", {})
    ax.set_ylabel("p50 latency, batch 1 (ms, log)")
    ax.set_title(f"latency per backend, {s.get('input_size')}px, {s.get('threads')} thread(s)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def load_accuracy(path: os.PathLike | str) -> Dict[str, float]:
    """Accuracy per model label from a JSON file.

    Accepted: a flat mapping ``{"model": 71.2}``, ``{"models": {"model": {"accuracy": 71.2}}}``,
    ``{"accuracy": {...}}``, or a `bssl run` report.json, whose ``eval`` section gives one number per
    role (``student``, ``teacher``, ...: linear top-1, else kNN, else the first protocol with a value).
    Keys may be bench model labels or roles; roles match rows by model kind (exports of the
    student count as the student).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"accuracy report {path} could not be read as JSON ({exc}); pass the report.json of a run") from None
    if isinstance(data, dict) and isinstance(data.get("eval"), dict):
        data = _run_report_accuracy(data["eval"])
    if isinstance(data, dict) and isinstance(data.get("accuracy"), dict):
        data = data["accuracy"]
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = {k: v.get("accuracy") if isinstance(v, dict) else v for k, v in data["models"].items()}
    acc = {str(k): float(v) for k, v in (data.items() if isinstance(data, dict) else [])
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not acc:
        raise UserError(f"accuracy report {path} holds no model -> accuracy numbers; expected {{\"model\": 71.2, ...}}")
    return acc


PROTOCOL_PREFERENCE = ("linear", "knn", "svm", "semisup", "fewshot")


def _run_report_accuracy(ev: Dict[str, Any]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for role, results in ev.items():
        if not isinstance(results, dict):
            continue
        names = [p for p in PROTOCOL_PREFERENCE if p in results] + [p for p in results if p not in PROTOCOL_PREFERENCE]
        for p in names:
            v = results[p].get("value") if isinstance(results[p], dict) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[str(role)] = float(v)
                break
    return out


def _accuracy_of(row: Dict[str, Any], accuracy: Dict[str, float]) -> Optional[float]:
    if row["model"] in accuracy:
        return accuracy[row["model"]]
    role = "teacher" if row.get("model_kind") == "teacher" else "student" if row.get("model_kind") in (
        "student", "onnx", "onnx-packed", "tvm", "tflite") else None
    return accuracy.get(role) if role else None


def plot_latency_vs_accuracy(report: Dict[str, Any], accuracy: Dict[str, float], path) -> Optional[Path]:
    """Each (model, backend) with a known accuracy as a point: batch-1 latency vs accuracy."""
    pts = [(r["p50_ms"], _accuracy_of(r, accuracy), f"{r['model']} / {r['backend']}") for r in report.get("rows", [])
           if r.get("status") == "ok" and _accuracy_of(r, accuracy) is not None]
    if not pts:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for lat, acc, label in pts:
        ax.scatter([lat], [acc])
        ax.annotate(label, (lat, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1 (ms, log)")
    ax.set_ylabel("accuracy")
    ax.set_title("latency vs accuracy")
    fig.tight_layout()
    return save_figure(fig, path)


def write_reports(report: Dict[str, Any], out_dir: os.PathLike | str, json_path: Optional[os.PathLike | str] = None,
                  accuracy: Optional[Dict[str, float]] = None, stem: str = "bench") -> Dict[str, str]:
    """Write JSON, Markdown and the plots; return {kind: path}."""
    out_dir = Path(out_dir)
    json_path = Path(json_path) if json_path else out_dir / f"{stem}.json"
    files = {"json": json_path, "markdown": out_dir / f"{stem}.md"}
    bars = plot_latency_bars(report, out_dir / f"{stem}-latency.png")
    if bars:
        files["latency_plot"] = bars
    if accuracy:
        acc_plot = plot_latency_vs_accuracy(report, accuracy, out_dir / f"{stem}-latency-accuracy.png")
        if acc_plot:
            files["accuracy_plot"] = acc_plot
    report = {**report, "files": {k: str(v) for k, v in files.items()}}
    write_json(json_path, report)
    with atomic_path(files["markdown"]) as tmp:
        tmp.write_text(markdown_report(report))
    return {k: str(v) for k, v in files.items()}
