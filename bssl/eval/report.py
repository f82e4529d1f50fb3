"""Results as Markdown tables (one per protocol) and the few-shot curve (mAP vs k with std bars)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Mapping

from ..plotting import pyplot, save_figure


def _num(v, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.2f}"


def _is_pct(metric: str) -> bool:
    return metric != "rank"


def data_label(res: Mapping) -> str:
    """The dataset, root, splits and image counts a result came from, as one line (older results: their dataset)."""
    label = res.get("source") or res.get("dataset") or "unknown data"
    return str(label).replace("|", "\\|")  # a path with "|" must not split the Markdown cell


def format_table(results: Mapping[str, dict], title: str = "Downstream evaluation") -> str:
    """Markdown: a summary table of every protocol's main number and its data, then a detail table per protocol."""
    lines = [f"### {title}", "", "| protocol | data (dataset, train → test split, images) | metric | value |",
             "|---|---|---|---|"]
    for name, res in results.items():
        metric = res.get("metric", "")
        value = _num(res.get("value"), _is_pct(metric))
        lines.append(f"| {name} | {data_label(res)} | {metric}{' (%)' if _is_pct(metric) else ''} | {value} |")
    for name, res in results.items():
        detail = _detail_table(name, res)
        if detail:
            lines += ["", f"#### {name}", "", f"data: {data_label(res)}", "", *detail]
    return "\n".join(lines) + "\n"


def _detail_table(name: str, res: dict) -> list:
    d = res.get("details", {})
    if "per_k" in d:
        has_acc = any("accuracy_mean" in r for r in d["per_k"].values())
        has_cost = any("cost" in r for r in d["per_k"].values())
        out = ["| k | mAP (%) mean ± std |" + (" accuracy (%) mean ± std |" if has_acc else "")
               + (" cost |" if has_cost else ""),
               "|---|---|" + ("---|" if has_acc else "") + ("---|" if has_cost else "")]
        for k, r in sorted(d["per_k"].items(), key=lambda kv: int(kv[0])):
            row = f"| {k} | {_num(r['mAP_mean'])} ± {_num(r['mAP_std'])} |"
            if has_acc:
                row += f" {_num(r.get('accuracy_mean'))} ± {_num(r.get('accuracy_std'))} |"
            if has_cost:
                row += f" {r.get('cost', '')} |"
            out.append(row)
        pad = (" |" if has_acc else "") + (" |" if has_cost else "")
        for k, why in sorted(d.get("skipped", {}).items(), key=lambda kv: int(kv[0])):
            out.append(f"| {k} | skipped: {why} |{pad}")
        if d.get("cost_selection"):
            out.append(f"\ncost selection: {d['cost_selection']}; {d.get('samples')} samples per k")
        return out
    if "per_fraction" in d:
        out = ["| labels | n | best top-1 (%) | lr | head x |", "|---|---|---|---|---|"]
        for frac, e in d["per_fraction"].items():
            b = e.get("best") or {}
            out.append(f"| {100 * float(frac):g}% | {e['n_labels']} | {_num(b.get('top1'))} | {b.get('lr', 'n/a')} | "
                       f"{b.get('head_mult', 'n/a')} |")
        return out
    if "per_class_ap" in d:
        costs = d.get("per_class_cost", {})
        out = ["| class | AP (%) |" + (" cost |" if costs else ""), "|---|---|" + ("---|" if costs else "")]
        for cls, ap in d["per_class_ap"].items():
            out.append(f"| {cls} | {_num(ap)} |" + (f" {costs.get(cls, '')} |" if costs else ""))
        if "accuracy" in d:
            out.append(f"| accuracy | {_num(d['accuracy'])} |" + (" |" if costs else ""))
        return out
    if "top5" in d:
        return ["| top-1 (%) | top-5 (%) |", "|---|---|", f"| {_num(res.get('value'))} | {_num(d['top5'])} |"]
    return []


def plot_fewshot(curves: Dict[str, dict], path: Path) -> Path:
    """One PNG: mAP (%) vs k (log2 axis) with std error bars, one line per model's few-shot result."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for model, res in curves.items():
        per_k = res["details"]["per_k"]
        ks = sorted(int(k) for k in per_k)
        mean = [100 * per_k[str(k)]["mAP_mean"] for k in ks]
        std = [100 * per_k[str(k)]["mAP_std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("positives per class (k)")
    ax.set_ylabel("mAP (%)")
    first = next(iter(curves.values()), {})
    where = f": {first['dataset']} {first.get('train_split')} → {first.get('test_split')}" if first.get("dataset") else ""
    ax.set_title(f"Few-shot linear SVM{where}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi="figure")


def comparison_rows(results_by_model: Mapping[str, Mapping[str, dict]]) -> list:
    """(protocol, metric, data label, {model: value}) rows: one per protocol and data, so that models measured on
    different data never share a row."""
    rows: dict = {}
    for model, res in results_by_model.items():
        for p, r in res.items():
            if not isinstance(r, Mapping):
                continue
            key = (p, r.get("metric", ""), data_label(r))
            rows.setdefault(key, {})[model] = r.get("value")
    return [(p, metric, label, values) for (p, metric, label), values in rows.items()]


def format_comparison(results_by_model: Mapping[str, Mapping[str, dict]]) -> str:
    """Markdown: one row per protocol and data, one column per model (main metric of each protocol)."""
    models = list(results_by_model)
    lines = ["| protocol | data | metric | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for p, metric, label, values in comparison_rows(results_by_model):
        cells = [_num(values[m], _is_pct(metric)) if m in values else "n/a" for m in models]
        lines.append(f"| {p} | {label} | {metric}{' (%)' if _is_pct(metric) else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
