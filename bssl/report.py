"""Human-readable report of a `bssl run`: Markdown tables plus PNG training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from .plotting import pyplot, save_figure


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if v is None:
        return "–"
    return str(v)


def md_table(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(history: List[Dict[str, Any]], keys: List[str], path: Path, title: str, x_key: str = "epoch") -> Optional[Path]:
    """Plot the numeric `keys` of a per-epoch history; returns the PNG path or None if nothing to plot."""
    series = {k: [(h.get(x_key, i), h[k]) for i, h in enumerate(history) if isinstance(h.get(k), (int, float))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = pyplot()

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for ax, (k, pts) in zip(axes[0], series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(k)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


# Row names of the protocols in the evaluation table.
_PROTOCOL_NAMES = {"linear": "linear probe", "knn": "kNN", "svm": "SVM", "fewshot": "few-shot SVM",
                   "semisup": "semi-supervised", "transfer": "transfer (linear)", "rankme": "RankMe"}


def _training_data(cfg: Dict[str, Any], split: str) -> str:
    """The [data] set a training step reads, e.g. "imagefolder /data/photos, train" or "shapes, train (5,000 images)"."""
    data = cfg.get("data", {})
    text = str(data.get("dataset"))
    if data.get("root"):
        text += f" {data['root']}"
    n = data.get({"train": "num_train", "test": "num_test"}.get(split, ""))
    generated = data.get("dataset") in ("shapes", "shapes-multilabel")
    subset = int(data.get("train_subset") or 0) if split == "train" and not generated else 0
    if subset:  # bssl.data.dataset_from_config trains on this many images when the split holds more
        return f"{text}, {split} (at most {subset:,} images, stratified subset, seed {cfg.get('run', {}).get('seed', 0)})"
    return f"{text}, {split}" + (f" ({int(n):,} images)" if generated and n else "")


def _eval_rows(ev: Dict[str, Any]) -> tuple:
    """Rows "<protocol> <metric> — <data>" by model columns; a protocol measured on different data per model
    (an older report) gets one row per data."""
    from .eval.report import comparison_rows

    models = list(ev)
    by_model = {who: res.get("results", res) for who, res in ev.items()}
    rows = []
    for p, metric, label, values in comparison_rows(by_model):
        name = f"{_PROTOCOL_NAMES.get(p, p)} {metric}".strip()
        pct = metric != "rank"
        cells = [(100 * values[m] if pct and isinstance(values[m], float) else values[m]) if m in values else None
                 for m in models]
        rows.append([f"{name}{' (%)' if pct else ''}", label] + cells)
    return ["protocol", "data (dataset, train → test split, images)"] + models, rows


def render_markdown(report: Dict[str, Any], out_dir: Path) -> str:
    out_dir = Path(out_dir)
    cfg = report.get("config", {})
    parts = [f"# bssl run report ({report.get('preset')})", "",
             f"bssl {report.get('bssl_version')}; data: `{cfg.get('data', {}).get('dataset')}` "
             f"at {cfg.get('data', {}).get('image_size')} px; seed {cfg.get('run', {}).get('seed')}.", ""]

    # --- downstream evaluation: trained student vs teacher vs random-init floor, each row with its data
    ev = report.get("eval", {})
    if ev:
        header, rows = _eval_rows(ev)
        parts += ["## Downstream evaluation", "", md_table(header, rows), ""]

    # --- teacher
    t = report.get("teacher", {})
    if t:
        # the online kNN monitor of teacher training: [data] train split against its held-out split
        knn_data = t.get("knn_source") or (f"{_training_data(cfg, 'train')} → held-out split"
                                           if t.get("knn_acc") is not None else "–")
        parts += ["## Teacher", "", md_table(["method", "kNN acc", "kNN data", "images/s", "checkpoint"],
                                              [[t.get("method", "imported" if t.get("imported") else None), t.get("knn_acc"),
                                                knn_data, t.get("images_per_s"), t.get("checkpoint")]]), ""]
        png = plot_curves(t.get("history", []), ["loss", "knn_acc"], out_dir / "plots" / "teacher.png", "teacher pretraining")
        if png:
            parts += [f"![teacher curves]({png.relative_to(out_dir)})", ""]

    # --- distillation
    d = report.get("distill", {})
    if d:
        hist = d.get("history", [])
        last = hist[-1] if hist else {}
        parts += ["## BSSL distillation", "", md_table(["stages", "final loss", "data", "seconds", "student checkpoint"],
                                                        [[len(d.get("stage_checkpoints", [])) or None, last.get("loss"),
                                                          _training_data(cfg, "train"), d.get("seconds"),
                                                          d.get("checkpoint")]]), ""]
        # the distillation step already drew its loss and gradient-norm curves: link them, don't redraw
        for p in map(Path, d.get("plots", [])):
            parts += [f"![{p.stem}]({p.relative_to(out_dir) if p.is_relative_to(out_dir) else p})", ""]

    # --- profile
    pr = report.get("profile", {})
    if pr:
        keys = [k for k in ("bops", "flops", "ops", "params", "binary_params", "fp32_bytes", "deployed_bytes",
                            "peak_activation_bytes") if k in pr]
        parts += ["## Student cost (profiler)", "", md_table(keys, [[pr[k] for k in keys]]), ""]

    # --- export
    ex = report.get("export", [])
    if ex:
        parts += ["## Exported models", "", md_table(["format", "target", "bytes", "path"],
                                                      [[e.get("format"), e.get("target"), e.get("bytes"), e.get("path")] for e in ex]), ""]

    # --- the deployed classifier: the student with the linear probe's head, on the user's classes, beside the FP
    # teacher with its own probe head as ONNX FP32 and int8
    clf = report.get("classifier")
    if clf and clf.get("rows"):
        rows = []
        for r in clf["rows"]:
            acc = r["accuracy"]["accuracy"]
            cmp_ = acc["details"].get("compare") or {}
            # the PyTorch number: the classifier run on the same images, else the probe's own at training
            torch_top1 = cmp_.get("top1", (acc["details"].get("trained") or {}).get("top1"))
            lat = r.get("latency_ms")
            rows.append([r["model"], r["format"], Path(r["export"]["path"]).name, r["export"].get("bytes"),
                         f"{100 * acc['value']:.2f}", "–" if torch_top1 is None else f"{100 * torch_top1:.2f}",
                         f"{100 * cmp_['top1_agreement']:.1f}" if cmp_ else "–",
                         f"{lat['p50']:.3f}" if lat else "–", lat["engine"] if lat else "–"])
        source = clf["rows"][0]["accuracy"]["accuracy"]["source"]
        parts += ["## Deployed classifier", "",
                  f"The binary student with the linear probe's head on the dataset's own classes "
                  f"(`{clf['checkpoint']}`), beside the FP teacher with a linear head trained the same way and "
                  "exported to ONNX FP32 and int8 (static QDQ, calibrated on 64 of the run's training images). Top-1 "
                  f"is measured on each deployed file itself ({source}), beside PyTorch on the same images (the student "
                  "classifier run on them; the teacher's probe when it was trained); latency is batch 1, 1 thread.", "",
                  md_table(["model", "format", "file", "bytes", "deployed top-1 %", "PyTorch top-1 %", "same top-1 %",
                            "p50 ms", "engine"], rows), ""]

    # --- bench
    b = report.get("bench", {})
    if b:
        try:
            from bssl.bench import markdown_table
            parts += ["## Latency and memory", "", markdown_table(b), ""]
        except ImportError:
            pass

    secs = report.get("seconds", {})
    if secs:
        parts += ["## Time per step (s)", "", md_table(list(secs), [list(secs.values())]), ""]
    return "\n".join(parts) + "\n"
