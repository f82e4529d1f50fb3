"""Miniature reproduction of the BSSL paper's Tables 5, 6 and 7 plus the baselines, in one command.

    python benchmarks/ablation_bssl.py --preset cpu --seeds 0 1 2 --out runs/ablation [--teacher T.pt] [--jobs N]
        [--keep docs/results-real/runs] [--doc docs/results-real.md] [--report-only]

Trains (or takes) one FP teacher, then for every row and seed distils a binary student with
`bssl.distill.run_distill` and evaluates it with `bssl.eval` (linear probe and kNN top-1, VOC07-style
SVM mAP). Writes `ablation.json` and `ablation.md` (mean ± std over seeds) into --out. Every finished
(row, seed) is kept on disk, so rerunning the command resumes; --keep also stores each result as a
small JSON file (with the teacher's fingerprint, the CPU and the gradient-norm curve) in a folder that
can live in git, so the tables fill in over sessions that lose --out. Seeds vary the student
(initialisation, data order, augmentations); the data and the teacher stay fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Dict, List

# Rows: name -> (table, method, [distill] overrides, label)
ROWS: Dict[str, tuple] = {
    "abl1-random-classifier": ("ablation", "bssl", {"feature_similarity": "none", "stages": 1},
                               "(1) random classifier only (KL)"),
    "abl2-feature-similarity": ("ablation", "bssl", {"lambda_schedule": "constant", "stages": 1},
                                "(2) + feature similarity (λ = 0.7)"),
    "abl3-dynamic-balancing": ("ablation", "bssl", {"lambda_schedule": "cosine", "stages": 1},
                               "(3) + dynamic balancing (cosine λ)"),
    "bssl": ("ablation", "bssl", {}, "(4) + multi-stage = full BSSL"),
    "fs-l1": ("fs", "bssl", {"feature_similarity": "l1"}, "L_FS = L1"),
    "fs-l2": ("fs", "bssl", {"feature_similarity": "l2"}, "L_FS = L2"),
    "fs-on-heads": ("fs", "bssl", {"fs_target": "head"}, "L_FS = cosine on the head outputs g(h), l(k) (released code)"),
    "lambda-constant": ("lambda", "bssl", {"lambda_schedule": "constant"}, "λ constant 0.7"),
    "lambda-step": ("lambda", "bssl", {"lambda_schedule": "step"}, "λ step 0.9 → 0.7 at T/2"),
    "frozen-g": ("baseline", "bssl", {"train_classifier": False}, "BSSL with g frozen (released code)"),
    "direct-mocov2": ("baseline", "direct-mocov2", {}, "direct MoCo v2 on the binary student"),
    "direct-byol": ("baseline", "direct-byol", {}, "direct BYOL on the binary student"),
    "direct-simclr": ("baseline", "direct-simclr", {}, "direct SimCLR on the binary student"),
    "s2bnn": ("baseline", "s2bnn", {}, "S2-BNN (KL to the teacher's SSL head)"),
    "supervised-kl": ("baseline", "supervised-kl", {}, "supervised KL (labels, upper reference)"),
    "no-infomax": ("deviation", "bssl", {"classifier_reg_weight": 0.0}, "without the infomax term on g (β = 0)"),
    "no-fs-center": ("deviation", "bssl", {"fs_center": False}, "without centring h(x) before L_FS"),
}
# rows that share the full BSSL run: the cosine FS and cosine λ variants are the full row itself
ALIASES = {"fs-cosine": ("fs", "bssl", "L_FS = cosine (full BSSL)"),
           "lambda-cosine": ("lambda", "bssl", "λ cosine 0.9 → 0.7 (full BSSL)"),
           "deviations-all-on": ("deviation", "bssl", "all on: infomax β = 1, centred h(x), projector, L_FS on features (full BSSL)"),
           "no-projector": ("deviation", "fs-on-heads", "without the projector: L_FS on the heads l(k), g(h) as the released code")}
TABLES = {
    "ablation": "Table 5 (miniature): ablation of the BSSL components",
    "fs": "Table 6 (miniature): feature-similarity loss",
    "lambda": "Table 7 (miniature): balancing schedule λ(t)",
    "baseline": "Baselines and references",
    "deviation": "This project's deviations from the paper, each switched off",
}
PROTOCOLS = ("linear", "knn", "svm")
# everything from this line on in the --doc page is written by hand and survives a regeneration
NOTES_MARKER = "<!-- notes: kept when the tables are regenerated -->"
PROTOCOL_NAMES = {"linear": "linear top-1", "knn": "kNN top-1", "svm": "SVM mAP"}


def _row_cfg(cfg: Dict[str, Any], row: str, seed: int) -> Dict[str, Any]:
    from bssl.config import merge

    _, method, over, _ = ROWS[row]
    return merge(cfg, {"distill": {**over, "method": method, "seed": seed}})


def _evaluate(model_or_path, cfg, out_dir: Path) -> Dict[str, float]:
    from bssl.eval import evaluate

    res = evaluate(model_or_path, cfg, list(PROTOCOLS), out_dir)
    return {p: float(res[p]["value"]) for p in PROTOCOLS} | {f"{p}_metric": res[p]["metric"] for p in PROTOCOLS}


def _result_name(seed: int | str) -> str:
    """File stem of a kept result: `seed<N>` for a run, the fingerprint for the teacher's own row."""
    return f"seed{seed}" if isinstance(seed, int) else str(seed)


def _kept(out: str, keep: str | None, row: str, seed: int) -> Dict[str, Any] | None:
    """A finished (row, seed) result: from this run's --out folder, else from the --keep folder."""
    name = _result_name(seed)
    for f in (Path(out) / row / name / "result.json", Path(keep or "") / row / f"{name}.json"):
        if (keep or f.name == "result.json") and f.is_file():
            return json.loads(f.read_text())
    return None


def _finish(result: Dict[str, Any], out: str, keep: str | None) -> Dict[str, Any]:
    from bssl.utils import write_json

    name = _result_name(result["seed"])
    write_json(Path(out) / result["row"] / name / "result.json", result)
    if keep:
        write_json(Path(keep) / result["row"] / f"{name}.json", result)
    return result


def teacher_fingerprint(path: str | Path) -> str:
    """Short content hash of a teacher's backbone weights: which teacher a kept result was distilled from."""
    import torch

    from bssl.utils import hash_tensors

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return hash_tensors(sorted(ckpt["backbone"].items())).hexdigest()[:12]


def _cpu() -> str:
    from bssl.bench.machine import describe_machine

    return describe_machine()["cpu"]


def _grad_curve(folder: Path, points: int = 200) -> List[List[float]]:
    """(logged iteration, gradient norm of the student) pairs, thinned to at most `points`, for the Fig. 2 plot."""
    f = folder / "steps.jsonl"
    steps = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []
    pts = [[i, s["grad_features"]] for i, s in enumerate(steps) if s.get("grad_features") is not None]
    return pts[:: max(1, -(-len(pts) // points))]


def run_task(cfg: Dict[str, Any], row: str, seed: int, teacher: str, teacher_fp: str, out: str,
             keep: str | None, threads: int) -> Dict[str, Any]:
    """One row and seed: distil (resumable) then evaluate. Runs in a worker process."""
    import torch

    torch.set_num_threads(threads)
    from bssl.distill import run_distill

    done = _kept(out, keep, row, seed)
    if done is not None:
        return done
    folder = Path(out) / row / f"seed{seed}"
    rcfg = _row_cfg(cfg, row, seed)
    resume = (folder / "log.jsonl").exists()
    dres = run_distill(rcfg, teacher, folder, resume=resume, progress=False)
    t_eval = time.time()
    scores = _evaluate(dres["checkpoint"], rcfg, folder / "eval")
    last = dres["history"][-1]
    total = dres["train_seconds"] + time.time() - t_eval  # train_seconds spans every invocation of a resumed run
    result = {"row": row, "seed": seed, **scores, "teacher": teacher_fp, "cpu": _cpu(),
              "threads": threads, "distill_seconds": dres["seconds"], "epoch_seconds": dres["train_seconds"],
              "resumed": resume, "total_seconds": round(total, 1), "final_loss": last.get("loss"),
              "grad_norms_last_epoch": {k: v for k, v in last.items() if k.startswith("grad_")},
              "grad_curve": _grad_curve(folder)}
    return _finish(result, out, keep)


def teacher_task(cfg: Dict[str, Any], teacher: str, teacher_fp: str, out: str, keep: str | None,
                 threads: int) -> Dict[str, Any]:
    """Ceiling reference: the FP teacher's own features, evaluated once per teacher checkpoint."""
    import torch

    torch.set_num_threads(threads)
    done = _kept(out, keep, "fp-teacher", teacher_fp)
    if done is not None:
        return done
    scores = _evaluate(teacher, cfg, Path(out) / "fp-teacher" / teacher_fp / "eval")
    return _finish({"row": "fp-teacher", "seed": teacher_fp, **scores, "teacher": teacher_fp, "cpu": _cpu()}, out, keep)


def random_student_task(cfg: Dict[str, Any], seed: int, out: str, keep: str | None, threads: int) -> Dict[str, Any]:
    """Floor reference: the untrained binary student (same architecture), evaluated as is."""
    import torch

    torch.set_num_threads(threads)
    from bssl.distill.trainer import build_student
    from bssl.utils import seed_everything

    done = _kept(out, keep, "random-student", seed)
    if done is not None:
        return done
    seed_everything(seed)
    student = build_student(cfg, int(cfg["distill"].get("num_pseudo_classes", 2000)), 2).eval()
    folder = Path(out) / "random-student" / f"seed{seed}"
    return _finish({"row": "random-student", "seed": seed, **_evaluate(student, cfg, folder / "eval"),
                    "cpu": _cpu()}, out, keep)


def _stats(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def _fmt(s: Dict[str, float] | None) -> str:
    if not s:
        return "–"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}" if s["n"] > 1 else f"{100 * s['mean']:.2f}"


def summarise(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    by_row: Dict[str, Dict[str, Any]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    summary = {}
    for row, rs in by_row.items():
        rs = sorted(rs, key=lambda x: str(x["seed"]))
        summary[row] = {p: _stats([r[p] for r in rs]) for p in PROTOCOLS}
        summary[row]["seeds"] = [r["seed"] for r in rs]
        secs = [r["total_seconds"] for r in rs if r.get("total_seconds")]
        summary[row]["minutes"] = statistics.fmean(secs) / 60 if secs else None
    if "fp-teacher" in summary:
        summary["fp-teacher"]["fixed"] = True  # one teacher for every seed: its std is over teacher checkpoints
    return summary


def teachers_used(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per teacher fingerprint: its own scores and CPU (if evaluated) and how many runs were distilled from it."""
    used: Dict[str, Dict[str, Any]] = {}
    for r in results:
        if r["row"] == "fp-teacher":
            used.setdefault(r["teacher"], {"runs": 0}).update(knn=r["knn"], cpu=r.get("cpu"))
        elif r.get("teacher"):
            used.setdefault(r["teacher"], {"runs": 0})["runs"] += 1
    return used


def _compare(summary: Dict[str, Any], better: str, worse: str, p: str) -> Dict[str, Any] | None:
    """`better` > `worse` on protocol p: the margin of the means against the combined seed std sqrt(s1² + s2²)."""
    a, b = summary.get(better, {}).get(p), summary.get(worse, {}).get(p)
    if not a or not b:
        return None
    margin = a["mean"] - b["mean"]
    noise = (a["std"] ** 2 + b["std"] ** 2) ** 0.5
    seeds = min([s["n"] for row, s in ((better, a), (worse, b)) if not summary[row].get("fixed")] or [1])
    if seeds < 2:  # one side has no std yet: its noise is unknown, so no verdict either way
        verdict = ("same" if margin > 0 else "other") + " direction, one seed (no std yet)"
    elif margin <= 0:
        verdict = "NOT reproduced" + (" (reversed by more than the seed std)" if -margin > noise else "")
    elif margin > noise:
        verdict = "reproduced"
    else:
        verdict = "same direction, within the seed std"
    return {"margin": margin, "combined_std": noise, "verdict": verdict, "holds": margin > 0, "seeds": seeds}


def checks(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The paper's orderings, each with its margin over the seed std at this scale."""
    pairs = [("full BSSL beats direct MoCo v2 on the binary student", "bssl", "direct-mocov2"),
             ("full BSSL beats direct BYOL on the binary student", "bssl", "direct-byol"),
             ("full BSSL beats direct SimCLR on the binary student", "bssl", "direct-simclr"),
             ("full BSSL beats S2-BNN-style distillation", "bssl", "s2bnn"),
             ("(2) feature similarity improves on (1) KL only", "abl2-feature-similarity", "abl1-random-classifier"),
             ("(3) dynamic balancing improves on (2) constant λ", "abl3-dynamic-balancing", "abl2-feature-similarity"),
             ("(4) multi-stage improves on (3) one stage", "bssl", "abl3-dynamic-balancing"),
             ("cosine L_FS beats L1", "bssl", "fs-l1"),
             ("cosine L_FS beats L2", "bssl", "fs-l2"),
             ("cosine λ(t) beats constant λ", "bssl", "lambda-constant"),
             ("cosine λ(t) beats the step schedule", "bssl", "lambda-step"),
             ("training g jointly beats the released frozen g", "bssl", "frozen-g"),
             ("the trained binary student beats its untrained floor", "bssl", "random-student"),
             ("the FP teacher stays above the binary student", "fp-teacher", "bssl")]
    out = []
    for claim, better, worse in pairs:
        for p in PROTOCOLS:
            c = _compare(summary, better, worse, p)
            if c is not None:
                out.append({"claim": claim, "protocol": p, "rows": [better, worse], **c})
    return out


def _rows_of(table: str) -> List[tuple]:
    """(summary key, label) of a table's rows: its own rows, then rows shared with the full run."""
    rows = [(row, label) for row, (t, _, _, label) in ROWS.items() if t == table]
    rows += [(src, label) for t, src, label in ALIASES.values() if t == table]
    if table == "baseline":
        rows += [("random-student", "untrained binary student (floor)"), ("fp-teacher", "FP teacher (ceiling)")]
    return rows


def markdown(summary: Dict[str, Any], claims: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = [f"# BSSL ablations in miniature ({meta['preset']} preset)", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}  ",
             f"Data: {meta['data']}  ",
             f"Seeds: {meta['seeds']}; linear = top-1 % of a linear probe on frozen features, kNN = weighted kNN top-1 %, "
             f"SVM = VOC07-style mAP % of linear SVMs ({meta['svm_dataset']}); mean ± std over the seeds finished "
             "(n in the last column).  ",
             f"Teacher: {meta['teacher']}; student: {meta['student']}. One shared configuration for every row: the "
             f"preset's, with only the row's own switch changed.  ",
             ("Tables written from the results on disk (--report-only); " if meta.get("report_only") else
              f"Time so far: {meta['seconds'] / 60:.0f} min in this invocation; ")
             + "each row's mean distil + eval time is in the last column.  ",
             "Teacher checkpoints the runs were distilled from (same preset and seed; retrained where a session "
             "lost its runs folder, so a different CPU can give different weights): "
             + "; ".join(f"`{fp}` " + (f"(kNN {100 * t['knn']:.2f}, trained on {t['cpu']}) " if "knn" in t else "")
                         + f"{t['runs']} runs" for fp, t in meta.get("teachers", {}).items()) + ".  ",
             "CPUs the runs took their time on: " + "; ".join(f"{cpu} ({n} runs)" for cpu, n in meta.get("cpus", {}).items())
             + ".", ""]
    head = "| row | " + " | ".join(PROTOCOL_NAMES[p] for p in PROTOCOLS) + " | seeds | min / run |"
    for table, title in TABLES.items():
        lines += [f"## {title}", "", head, "|---" * (len(PROTOCOLS) + 3) + "|"]
        for key, label in _rows_of(table):
            if key in summary:
                r = summary[key]
                mins = r.get("minutes")
                lines.append(f"| {label} | " + " | ".join(_fmt(r.get(p)) for p in PROTOCOLS)
                             + f" | {len(r.get('seeds', [])) or 1} | {'–' if mins is None else f'{mins:.1f}'} |")
        lines.append("")
    missing = [f"`{row}` ({ROWS[row][3]})" for row in ROWS if row not in summary]
    short = [f"`{row}` ({len(summary[row]['seeds'])} of {len(meta['seeds'])})" for row in ROWS
             if row in summary and len(summary[row]["seeds"]) < len(meta["seeds"])]
    if missing or short:
        lines += ["## Not measured yet", ""]
        if missing:
            lines.append(f"- rows without a finished run: {', '.join(missing)}")
        if short:
            lines.append(f"- rows with fewer seeds than {meta['seeds']}: {', '.join(short)}")
        lines += ["- rerunning the command above with these rows continues from the finished (row, seed) results "
                  "kept under its --out and --keep folders", ""]
    lines += ["## The paper's orderings at this scale", "",
              "Margin = difference of the means (percentage points); noise = sqrt(std₁² + std₂²) over seeds. "
              "Reproduced means the margin exceeds the noise.", "",
              "| claim | protocol | margin | noise | seeds | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['protocol']} | {100 * c['margin']:+.2f} | {100 * c['combined_std']:.2f} | "
                     f"{c['seeds']} | {c['verdict']} |")
    lines.append("")
    for plot in meta.get("plots", []):
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return "\n".join(lines)


def plots(summary: Dict[str, Any], out: Path, results: List[Dict[str, Any]]) -> List[Path]:
    """Bar chart of every row with seed-std error bars, and the student's gradient norms of rows (1) and (2)."""
    from bssl.plotting import pyplot, save_figure

    plt = pyplot()

    made = []
    keys = [k for k in list(ROWS) + ["random-student", "fp-teacher"] if k in summary]
    if keys:
        fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(5 * len(PROTOCOLS), 0.35 * len(keys) + 1.5), sharey=True)
        for ax, p in zip(axes, PROTOCOLS):
            means = [100 * summary[k][p]["mean"] for k in keys]
            stds = [100 * summary[k][p]["std"] for k in keys]
            ax.barh(range(len(keys)), means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
            ax.set_title(PROTOCOL_NAMES[p] + " %")
            ax.set_yticks(range(len(keys)), keys)
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
        made.append(save_figure(fig, out / "ablation_bars.png", dpi=90))
    curves = {}
    for r in results:
        if r["row"] in ("abl1-random-classifier", "abl2-feature-similarity") and r.get("grad_curve"):
            curves.setdefault(r["row"], []).append(r["grad_curve"])
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for row, runs in curves.items():
            for j, pts in enumerate(runs):
                ax.plot([x for x, _ in pts], [y for _, y in pts], color="tab:red" if row.startswith("abl1") else "tab:green",
                        alpha=0.6, lw=1, label=ROWS[row][3] if j == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("logged iteration")
        ax.set_ylabel("gradient norm of the binary student k")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        made.append(save_figure(fig, out / "grad_norms_rows12.png", dpi=90))
    return made


def _machine_text(usage: str | None) -> str:
    from bssl.bench.machine import describe_machine

    m = describe_machine()
    text = f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['versions'].get('torch')}"
    return text + (f"; {usage}" if usage else "")


def _svm_text(cfg: Dict[str, Any]) -> str:
    from bssl.config import validate
    from bssl.eval import svm_dataset

    name, root = svm_dataset(validate(cfg))
    return name + (f" at {root}" if root else "")


def main(argv=None) -> int:
    from bssl.config import apply_overrides, load_preset
    from bssl.pipeline import validate_inputs
    from bssl.data.summary import one_line
    from bssl.utils import atomic_path, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: train one into --out)")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder (e.g. in git) that also keeps every finished (row, seed) result as a small JSON file; "
                         "results found there are not rerun and the tables read them, so they fill in over sessions")
    ap.add_argument("--jobs", type=int, default=1, help="row/seed runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / jobs)")
    ap.add_argument("--device", default=None, help="run.device for all runs (auto, cpu, cuda)")
    ap.add_argument("--teacher-workers", type=int, default=None, help="data loader workers for the teacher's training")
    ap.add_argument("--machine", default=None, help="how the machine was used (parallel runs, load), for the report")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the tables from the (row, seed) results already under --out")
    ap.add_argument("--doc", type=Path, default=None,
                    help="also write the tables here (e.g. docs/results-real.md), plots into a folder beside it")
    args = ap.parse_args(argv)

    cfg = apply_overrides(load_preset(args.preset), args.overrides)
    if args.device:
        cfg["run"]["device"] = args.device
    cfg.setdefault("eval", {})["jobs"] = 1  # the SVM sweep must not oversubscribe the parallel runs
    if not args.report_only:
        validate_inputs(cfg, args.teacher)  # a wrong data folder or teacher stops here, before --out exists
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    t0 = time.time()

    teacher = args.teacher
    if teacher is None and args.report_only:
        teacher = out / "teacher" / "teacher.pt"
    elif teacher is None:
        from bssl.teachers import train_teacher

        tdir = out / "teacher"
        tcfg = apply_overrides(cfg, [f"data.workers={args.teacher_workers}"] if args.teacher_workers else [])
        res = train_teacher(tcfg, tdir, resume=(tdir / "teacher.pt").exists())
        teacher = Path(res["checkpoint"])
        print(f"teacher: {teacher} (kNN {res.get('knn_acc')})", flush=True)
    d = cfg["distill"]
    argv_shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]  # the training command
    meta = {"preset": args.preset, "seeds": args.seeds,
            "command": "python " + " ".join(["benchmarks/ablation_bssl.py", *argv_shown]),
            "report_only": args.report_only,
            "machine": _machine_text(args.machine), "data": one_line(cfg),
            "linear_dataset": cfg["data"].get("dataset"), "svm_dataset": _svm_text(cfg),
            "teacher": f"{cfg['teacher'].get('method')} {cfg['teacher'].get('arch')}, {cfg['teacher'].get('epochs')} epochs",
            "student": f"{d.get('student')} width {d.get('width')}, {d.get('epochs_stage1')}+{d.get('epochs_stage2')} epochs",
            "overrides": args.overrides}

    def write_report(results):
        """Rewritten after every finished run, so an interrupted benchmark still leaves its table."""
        have = {r["teacher"] for r in results if r["row"] == "fp-teacher"}
        wanted = {r.get("teacher") for r in results} - have - {None}
        results = results + [r for fp in sorted(wanted) for r in [_kept(str(out), keep, "fp-teacher", fp)] if r]
        summary = summarise(results)
        claims = checks(summary)
        meta["seconds"] = round(time.time() - t0, 1)
        meta["complete"] = all(r in summary and len(summary[r]["seeds"]) == len(args.seeds) for r in args.rows)
        meta["teachers"] = teachers_used(results)
        timed = [r["cpu"] for r in results if r.get("total_seconds") and r.get("cpu")]
        meta["cpus"] = {cpu: timed.count(cpu) for cpu in sorted(set(timed))}
        write_json(out / "ablation.json", {"meta": meta, "summary": summary, "claims": claims,
                                           "runs": sorted(results, key=lambda r: (r["row"], str(r["seed"])))})
        made = plots(summary, out, results)
        meta["plots"] = [p.name for p in made]
        md = markdown(summary, claims, meta)
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(md)
        if args.doc:
            import shutil

            figs = args.doc.with_suffix("")  # docs/results-real.md -> docs/results-real/
            figs.mkdir(parents=True, exist_ok=True)
            for p in made:
                shutil.copyfile(p, figs / p.name)
            meta["plots"] = [f"{figs.name}/{p.name}" for p in made]
            page = markdown(summary, claims, meta)
            if args.doc.exists() and NOTES_MARKER in args.doc.read_text():
                page += "\n" + NOTES_MARKER + args.doc.read_text().split(NOTES_MARKER, 1)[1]  # kept as written
            with atomic_path(args.doc) as tmp:
                tmp.write_text(page)
        return md

    # one seed of every row (in --rows order) before the next seed: a cut-short run still has a whole table
    tasks = [(row, s) for s in args.seeds for row in args.rows]
    keep = str(args.keep) if args.keep else None
    teacher_fp = teacher_fingerprint(teacher) if Path(teacher).is_file() else None
    if args.report_only:
        found = [_kept(str(out), keep, row, s) for row, s in tasks]
        found += [_kept(str(out), keep, "random-student", s) for s in args.seeds]
        found.append(_kept(str(out), keep, "fp-teacher", teacher_fp) if teacher_fp else None)
        print(write_report([r for r in found if r is not None]))
        return 0
    import multiprocessing as mp

    results: List[Dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(teacher_task, cfg, str(teacher), teacher_fp, str(out), keep, threads): ("fp-teacher", 0)}
        # the untrained floor is one evaluation per seed: first, so every partial table shows it
        futs.update({pool.submit(random_student_task, cfg, s, str(out), keep, threads): ("random-student", s)
                     for s in args.seeds})
        futs.update({pool.submit(run_task, cfg, row, s, str(teacher), teacher_fp, str(out), keep, threads): (row, s)
                     for row, s in tasks})
        for fut in as_completed(futs):
            row, s = futs[fut]
            r = fut.result()
            results.append(r)
            print(f"[{time.time() - t0:7.1f}s] {row:26s} seed {s}: linear {100 * r['linear']:.2f}  knn {100 * r['knn']:.2f}  "
                  f"svm {100 * r['svm']:.2f}", flush=True)
            md = write_report(results)
    print(md)
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "ablation_bssl.py"))
