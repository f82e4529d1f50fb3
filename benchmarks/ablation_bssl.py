"""Miniature reproduction of the BSSL paper's Tables 5, 6 and 7 plus the baselines, in one command.

    python benchmarks/ablation_bssl.py --preset cpu --seeds 0 1 2 --out runs/ablation [--teacher T.pt] [--jobs N]

Trains (or takes) one FP teacher, then for every row and seed distils a binary student with
`bssl.distill.run_distill` and evaluates it with `bssl.eval` (linear probe top-1 on the embedded
shapes data, VOC07-style SVM mAP on shapes-multilabel). Writes `ablation.json` and `ablation.md`
(mean ± std over seeds) into --out. Every finished row/seed is kept on disk, so rerunning the
command resumes. Seeds vary the student (initialisation, data order, augmentations); the data
and the teacher stay fixed.
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
}
# rows that share the full BSSL run: the cosine FS and cosine λ variants are the full row itself
ALIASES = {"fs-cosine": ("fs", "bssl", "L_FS = cosine (full BSSL)"),
           "lambda-cosine": ("lambda", "bssl", "λ cosine 0.9 → 0.7 (full BSSL)")}
TABLES = {
    "ablation": "Table 5 (miniature): ablation of the BSSL components",
    "fs": "Table 6 (miniature): feature-similarity loss",
    "lambda": "Table 7 (miniature): balancing schedule λ(t)",
    "baseline": "Baselines and references",
}
PROTOCOLS = ("linear", "svm")


def _row_cfg(cfg: Dict[str, Any], row: str, seed: int) -> Dict[str, Any]:
    from bssl.config import merge

    _, method, over, _ = ROWS[row]
    return merge(cfg, {"distill": {**over, "method": method, "seed": seed}})


def _evaluate(model_or_path, cfg, out_dir: Path) -> Dict[str, float]:
    from bssl.eval import evaluate

    res = evaluate(model_or_path, cfg, list(PROTOCOLS), out_dir)
    return {p: float(res[p]["value"]) for p in PROTOCOLS} | {f"{p}_metric": res[p]["metric"] for p in PROTOCOLS}


def run_task(cfg: Dict[str, Any], row: str, seed: int, teacher: str, out: str, threads: int) -> Dict[str, Any]:
    """One row and seed: distil (resumable) then evaluate. Runs in a worker process."""
    import torch

    torch.set_num_threads(threads)
    from bssl.distill import run_distill
    from bssl.utils import write_json

    folder = Path(out) / row / f"seed{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.time()
    rcfg = _row_cfg(cfg, row, seed)
    resume = (folder / "log.jsonl").exists()
    dres = run_distill(rcfg, teacher, folder, resume=resume, progress=False)
    scores = _evaluate(dres["checkpoint"], rcfg, folder / "eval")
    last = dres["history"][-1]
    result = {"row": row, "seed": seed, **scores, "distill_seconds": dres["seconds"],
              "total_seconds": round(time.time() - t0, 1), "final_loss": last.get("loss"),
              "grad_norms_last_epoch": {k: v for k, v in last.items() if k.startswith("grad_")},
              "plots": dres["plots"]}
    write_json(done, result)
    return result


def teacher_task(cfg: Dict[str, Any], teacher: str, out: str, threads: int) -> Dict[str, Any]:
    """Ceiling reference: the FP teacher's own features, evaluated once."""
    import torch

    torch.set_num_threads(threads)
    from bssl.utils import write_json

    done = Path(out) / "teacher_eval.json"
    if done.exists():
        return json.loads(done.read_text())
    result = _evaluate(teacher, cfg, Path(out) / "teacher_eval")
    write_json(done, result)
    return result


def random_student_task(cfg: Dict[str, Any], seed: int, out: str, threads: int) -> Dict[str, Any]:
    """Floor reference: the untrained binary student (same architecture), evaluated as is."""
    import torch

    torch.set_num_threads(threads)
    from bssl.distill.trainer import build_student
    from bssl.utils import seed_everything, write_json

    folder = Path(out) / "random-student" / f"seed{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    seed_everything(seed)
    student = build_student(cfg, int(cfg["distill"].get("num_pseudo_classes", 2000)), 2).eval()
    result = {"row": "random-student", "seed": seed, **_evaluate(student, cfg, folder / "eval")}
    write_json(done, result)
    return result


def _stats(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def _fmt(s: Dict[str, float] | None) -> str:
    if not s:
        return "–"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}" if s["n"] > 1 else f"{100 * s['mean']:.2f}"


def summarise(results: List[Dict[str, Any]], teacher_scores: Dict[str, float]) -> Dict[str, Any]:
    by_row: Dict[str, Dict[str, Any]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    summary = {}
    for row, rs in by_row.items():
        summary[row] = {p: _stats([r[p] for r in sorted(rs, key=lambda x: x["seed"])]) for p in PROTOCOLS}
        summary[row]["seeds"] = sorted(r["seed"] for r in rs)
    if teacher_scores:
        summary["fp-teacher"] = {p: _stats([teacher_scores[p]]) for p in PROTOCOLS}
    return summary


def checks(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The paper's orderings, each marked as reproduced or not at this scale."""
    def m(row, p="linear"):
        return summary.get(row, {}).get(p, {}).get("mean")

    out = []

    def add(claim, rows, ok):
        if ok is not None:
            out.append({"claim": claim, "rows": rows, "holds": bool(ok)})

    for p in PROTOCOLS:
        b, d = m("bssl", p), m("direct-mocov2", p)
        add(f"full BSSL beats direct MoCo v2 on the binary student ({p})", ["bssl", "direct-mocov2"],
            None if b is None or d is None else b > d)
        d2 = m("direct-byol", p)
        add(f"full BSSL beats direct BYOL on the binary student ({p})", ["bssl", "direct-byol"],
            None if b is None or d2 is None else b > d2)
        d3 = m("direct-simclr", p)
        add(f"full BSSL beats direct SimCLR on the binary student ({p})", ["bssl", "direct-simclr"],
            None if b is None or d3 is None else b > d3)
        seq = [m(r, p) for r in ("abl1-random-classifier", "abl2-feature-similarity", "abl3-dynamic-balancing", "bssl")]
        if all(v is not None for v in seq):
            add(f"each ablation step (1)→(4) improves ({p})", ["abl1..bssl"],
                all(a < b2 for a, b2 in zip(seq, seq[1:])))
        fs = {r: m(r, p) for r in ("bssl", "fs-l1", "fs-l2")}
        if all(v is not None for v in fs.values()):
            add(f"cosine is the best L_FS ({p})", list(fs), max(fs, key=fs.get) == "bssl")
        lam = {r: m(r, p) for r in ("bssl", "lambda-constant", "lambda-step")}
        if all(v is not None for v in lam.values()):
            add(f"cosine λ(t) is the best schedule ({p})", list(lam), max(lam, key=lam.get) == "bssl")
        s2 = m("s2bnn", p)
        add(f"full BSSL beats S2-BNN-style distillation ({p})", ["bssl", "s2bnn"],
            None if b is None or s2 is None else b > s2)
        fz = m("frozen-g", p)
        add(f"training g jointly beats the released frozen g ({p})", ["bssl", "frozen-g"],
            None if b is None or fz is None else b > fz)
    return out


def markdown(summary: Dict[str, Any], claims: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = [f"# BSSL ablations in miniature ({meta['preset']} preset)", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}  ",
             f"Seeds: {meta['seeds']}; linear = top-1 % of a linear probe on frozen features ({meta['linear_dataset']}), "
             f"SVM = VOC07-style mAP % of linear SVMs ({meta['svm_dataset']}); mean ± std over seeds.  ",
             f"Teacher: {meta['teacher']}; student: {meta['student']}.", ""]
    for table, title in TABLES.items():
        lines += [f"## {title}", "", "| row | linear top-1 | SVM mAP |", "|---|---|---|"]
        for row, (t, _, _, label) in ROWS.items():
            if t == table and row in summary:
                lines.append(f"| {label} | {_fmt(summary[row]['linear'])} | {_fmt(summary[row]['svm'])} |")
        for alias, (t, src, label) in ALIASES.items():
            if t == table and src in summary:
                lines.append(f"| {label} | {_fmt(summary[src]['linear'])} | {_fmt(summary[src]['svm'])} |")
        if table == "baseline":
            for row, label in (("random-student", "untrained binary student (floor)"),
                               ("fp-teacher", "FP teacher (ResNet-18, ceiling)")):
                if row in summary:
                    lines.append(f"| {label} | {_fmt(summary[row]['linear'])} | {_fmt(summary[row]['svm'])} |")
        lines.append("")
    lines += ["## Orderings of the paper at this scale", ""]
    for c in claims:
        lines.append(f"- {'reproduced' if c['holds'] else 'NOT reproduced'}: {c['claim']}")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bssl.config import apply_overrides, load_preset
    from bssl.utils import atomic_path, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: train one into --out)")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--jobs", type=int, default=1, help="row/seed runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / jobs)")
    ap.add_argument("--device", default=None, help="run.device for all runs (auto, cpu, cuda)")
    ap.add_argument("--teacher-workers", type=int, default=None, help="data loader workers for the teacher's training")
    ap.add_argument("--machine", default=None, help="description of the machine for the report")
    args = ap.parse_args(argv)

    cfg = apply_overrides(load_preset(args.preset), args.overrides)
    if args.device:
        cfg["run"]["device"] = args.device
    cfg.setdefault("eval", {})["jobs"] = 1  # the SVM sweep must not oversubscribe the parallel runs
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    t0 = time.time()

    teacher = args.teacher
    if teacher is None:
        from bssl.teachers import train_teacher

        tdir = out / "teacher"
        tcfg = apply_overrides(cfg, [f"data.workers={args.teacher_workers}"] if args.teacher_workers else [])
        res = train_teacher(tcfg, tdir, resume=(tdir / "teacher.pt").exists())
        teacher = Path(res["checkpoint"])
        print(f"teacher: {teacher} (kNN {res.get('knn_acc')})", flush=True)
    d = cfg["distill"]
    meta = {"preset": args.preset, "seeds": args.seeds, "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
            "machine": args.machine or f"{os.cpu_count()} CPU cores",
            "linear_dataset": cfg["data"].get("dataset"), "svm_dataset": cfg.get("eval", {}).get("multilabel_dataset"),
            "teacher": f"{cfg['teacher'].get('method')} {cfg['teacher'].get('arch')}, {cfg['teacher'].get('epochs')} epochs",
            "student": f"{d.get('student')} width {d.get('width')}, {d.get('epochs_stage1')}+{d.get('epochs_stage2')} epochs",
            "overrides": args.overrides}

    def write_report(results, teacher_scores):
        """Rewritten after every finished run, so an interrupted benchmark still leaves its table."""
        summary = summarise(results, teacher_scores)
        claims = checks(summary)
        meta["seconds"] = round(time.time() - t0, 1)
        meta["complete"] = len(results) == len(tasks) + len(args.seeds)
        write_json(out / "ablation.json", {"meta": meta, "summary": summary, "claims": claims,
                                           "runs": sorted(results, key=lambda r: (r["row"], r["seed"])),
                                           "teacher_eval": teacher_scores})
        md = markdown(summary, claims, meta)
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(md)
        return md

    # required rows first (all seeds), so a cut-short run still has the main table
    tasks = [(row, s) for row in args.rows for s in args.seeds]
    results: List[Dict[str, Any]] = []
    teacher_scores: Dict[str, float] = {}
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(teacher_task, cfg, str(teacher), str(out), threads): ("fp-teacher", 0)}
        futs.update({pool.submit(run_task, cfg, row, s, str(teacher), str(out), threads): (row, s) for row, s in tasks})
        futs.update({pool.submit(random_student_task, cfg, s, str(out), threads): ("random-student", s)
                     for s in args.seeds})
        for fut in as_completed(futs):
            row, s = futs[fut]
            r = fut.result()
            if row == "fp-teacher":
                teacher_scores = r
            else:
                results.append(r)
            print(f"[{time.time() - t0:7.1f}s] {row:26s} seed {s}: linear {100 * r['linear']:.2f}  "
                  f"svm {100 * r['svm']:.2f}", flush=True)
            md = write_report(results, teacher_scores)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
