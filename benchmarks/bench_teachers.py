"""Teacher methods side by side on the embedded data: kNN / linear accuracy and training speed.

    python benchmarks/bench_teachers.py --preset cpu --json out.json
    python benchmarks/bench_teachers.py --preset cpu --methods mocov2,byol --set teacher.epochs=3
    python benchmarks/bench_teachers.py --preset cifar10 --set data.root=ROOT --out runs/real/teachers \
        --keep docs/results-real/teachers --doc docs/results-real.md   # real photos; rerun to fill in the rest
    python benchmarks/bench_teachers.py ... --methods ensiam@10,simsiam-kaug@30   # extra rows at another budget

Every method is trained with train_teacher under the same preset (its [teacher] keys, the
method's own paper defaults for the rest), then its backbone is re-loaded with load_teacher and
probed on frozen features of the held-out split: weighted kNN (bssl.eval.knn) and a linear probe
(bssl.eval.linear, L2-normalised features). A random-init backbone of the same architecture is
the reference every method must beat. Each finished method keeps its row in OUT/<method>/result.json
(and, with --keep DIR, in DIR/<method>.json, a folder that can live in git) and is skipped when the
command is run again, so the table fills in over interrupted runs and over sessions that lose OUT.
--doc writes the table between the <!-- bench_teachers:begin/end --> lines of an existing page (or a page of
its own); --report-only rewrites it from the kept rows without training anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from bssl.config import apply_overrides, load_preset
from bssl.data import dataset_from_config
from bssl.eval.features import Features
from bssl.eval.linear import train_linear
from bssl.teachers import METHODS, build_backbone, load_teacher, train_teacher
from bssl.teachers.backbone import resolve_small_stem
from bssl.teachers.monitor import extract_features, knn_accuracy
from bssl.teachers.train import CHECKPOINT_NAME, _Indexed, teacher_settings
from bssl.data.augment import eval_transform
from bssl.utils import pick_device, seed_everything, write_json

ALL = ("mocov2", "byol", "simsiam", "simsiam-kaug", "ensiam", "fussl", "simclr")


def probe(encoder, cfg, device) -> dict:
    """kNN and linear accuracy of a frozen encoder on cfg's train (bank/fit) and test splits."""
    size = int(cfg["data"]["image_size"])
    t = teacher_settings(cfg)
    loaders = []
    for split in ("train", "heldout"):
        ds = dataset_from_config(cfg, split)
        loaders.append(torch.utils.data.DataLoader(_Indexed(ds, eval_transform(size)), batch_size=256))
    num_classes = int(cfg["data"]["num_classes"])
    encoder = encoder.to(device)
    (tr_f, tr_y), (te_f, te_y) = (extract_features(encoder, dl, device) for dl in loaders)
    knn = knn_accuracy(tr_f, tr_y, te_f, te_y, num_classes, int(t["knn_k"]), float(t["knn_t"]))
    classes = [str(c) for c in range(num_classes)]
    ev = cfg.get("eval", {})
    lin = train_linear(Features(tr_f.numpy(), tr_y.numpy(), classes, False), Features(te_f.numpy(), te_y.numpy(), classes, False),
                       epochs=int(ev.get("linear_epochs", 30)), lr=float(ev.get("linear_lr", 30.0)), norm="l2",
                       seed=int(cfg["run"].get("seed", 0)))
    return {"knn_acc": knn, "linear_acc": float(lin["value"])}


def table_text(args, base, rows) -> str:
    ref = rows["random-init"]
    from bssl.data.summary import one_line

    lines = [f"Teachers on {one_line(base)}; {base['data']['image_size']} px, preset {args.preset} "
             f"{' '.join(args.overrides)}",
             "", "| method | kNN acc | linear acc | kNN vs random | epochs | images/s | train s |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"
        lines.append(f"| {name} | {r['knn_acc']:.4f} | {r['linear_acc']:.4f} | {r['knn_acc'] - ref['knn_acc']:+.4f} | "
                     f"{r.get('epochs', '-')} | {ips} | {r['train_s']:.0f} |")
    cpus: dict = {}
    for name, r in rows.items():
        cpus.setdefault(r.get("cpu", "CPU not recorded"), []).append(name)
    lines += ["", "Each row was trained and timed on: " + "; ".join(f"{c} ({', '.join(n)})" for c, n in cpus.items())
              + " (compare images/s only between rows of one CPU)."]
    return "\n".join(lines)


def _budgets(a, b) -> str:
    """Said beside an ordering whose two rows trained for different numbers of epochs."""
    ea, eb = a.get("epochs"), b.get("epochs")
    return f" (after {ea} vs {eb} epochs: not the same budget)" if ea != eb else ""


def orderings(rows) -> list:
    """The questions the table answers: who leaves the random-init floor, EnSiam vs SimSiam K-aug, FUSSL vs its base."""
    ref = rows["random-init"]["knn_acc"]
    out = [f"{m} {'leaves' if r['knn_acc'] > ref else 'does NOT leave'} the random-init floor (kNN {r['knn_acc']:.4f} vs "
           f"{ref:.4f})" for m, r in rows.items() if m != "random-init"]
    pairs = [(e, k) for e in rows if e.partition("@")[0] == "ensiam" for k in rows if k.partition("@")[0] == "simsiam-kaug"]
    same_budget = [(e, k) for e, k in pairs if rows[e].get("epochs") == rows[k].get("epochs")]
    for e, k in same_budget or pairs:  # an equal-budget pair answers the question; otherwise say the budgets differ
        ke, kk = rows[e]["knn_acc"], rows[k]["knn_acc"]
        out.append(f"EnSiam {'above' if ke > kk else 'NOT above'} SimSiam with K augmentations: kNN {ke:.4f} vs {kk:.4f}"
                   + (f" (both {rows[e].get('epochs')} epochs)" if (e, k) in same_budget else _budgets(rows[e], rows[k])))
    base = (rows.get("fussl") or {}).get("fussl_base")
    if base in rows:
        f, b = rows["fussl"]["knn_acc"], rows[base]["knn_acc"]
        out.append(f"FUSSL around {base} {'above' if f > b else 'NOT above'} plain {base}: kNN {f:.4f} vs {b:.4f}"
                   + _budgets(rows["fussl"], rows[base]))
    return out


DOC_BEGIN, DOC_END = "<!-- bench_teachers:begin -->", "<!-- bench_teachers:end -->"


def write_doc(args, argv, base, rows, methods) -> None:
    """The table as a section: between DOC_BEGIN/DOC_END of an existing page (so it can live inside
    docs/results-real.md beside the ablation tables), or as a page of its own."""
    from bssl.bench.machine import describe_machine
    from bssl.utils import atomic_path, replace_section

    m = describe_machine()
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    section = "\n".join([
        f"## Teachers on {base['data']['dataset']}", "",
        f"Command: `python benchmarks/bench_teachers.py {' '.join(shown)}` (one seed; each method with the "
        f"preset's [teacher] budget and its paper defaults for the rest; kNN and a linear probe on frozen features of "
        f"the held-out split). Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['versions'].get('torch')}, "
        f"{args.threads or torch.get_num_threads()} torch thread(s) per training. Rows appear as methods finish.", "",
        table_text(args, base, rows), "", "### Orderings", ""] + [f"- {o}" for o in orderings(rows)]) + "\n"
    missing = [name for name in methods if name not in rows]
    if missing:
        section += f"\nNot trained yet: {', '.join(missing)} (the same command trains them and keeps the rows above).\n"
    if args.doc.is_file() and DOC_BEGIN in args.doc.read_text():
        replace_section(args.doc, DOC_BEGIN, DOC_END, section)
        return
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.doc) as tmp:
        tmp.write_text(f"# Teachers on {base['data']['dataset']}\n\n{DOC_BEGIN}\n{section}{DOC_END}\n")


def method_budget(entry: str):
    """`METHOD` (the preset's budget) or `METHOD@EPOCHS` (the same method for EPOCHS epochs, its own row)."""
    from bssl.errors import UserError

    method, at, epochs = entry.partition("@")
    METHODS.get(method)
    if at and not (epochs.isdigit() and int(epochs) > 0):
        raise UserError(f"--methods {entry}: the number after @ is the epochs to train, a positive integer "
                        f"(e.g. {method}@30)")
    return method, int(epochs) if at else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--methods", default=",".join(ALL),
                    help="comma-separated methods; METHOD@EPOCHS adds a row of METHOD trained for EPOCHS epochs "
                         "(e.g. simsiam-kaug@30 beside EnSiam's 30)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_teachers"), help="folder for the teachers")
    ap.add_argument("--resume", action="store_true", help="(always on) finished methods are reused, checkpoints continued")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="device of the teacher training (cpu, cuda, auto)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--doc", type=Path, default=None, help="write the table with the machine and orderings here")
    ap.add_argument("--keep", type=Path, default=None,
                    help="also keep each finished row as DIR/<method>.json (with its CPU); rows found there are reused")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the table (--doc, --json) from the rows already in --out or --keep")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budgets = {m: method_budget(m) for m in methods}
    base = apply_overrides(load_preset(args.preset), args.overrides)
    base["run"]["device"] = args.device
    from bssl.pipeline import validate_inputs

    if not args.report_only:
        validate_inputs(base)  # a wrong data folder stops here, in one line, before --out is created
    seed = int(base["run"].get("seed", 0))

    from bssl.bench.machine import describe_machine
    from bssl.utils import write_json as _write

    def cached(folder: Path, compute):
        """A row computed once: OUT/<name>/result.json (or --keep's <name>.json) is reused on the next invocation."""
        copies = [folder / "result.json"] + ([args.keep / f"{folder.name}.json"] if args.keep else [])
        for done in copies:
            if done.is_file():
                return json.loads(done.read_text())
        if args.report_only:
            return None
        row = {**compute(), "cpu": describe_machine()["cpu"]}
        for done in copies:
            _write(done, row)
        return row

    rows = {}

    def random_row():
        seed_everything(seed)
        t = teacher_settings(base)
        rand = build_backbone(str(t["arch"]), small_stem=resolve_small_stem(t["small_stem"], base["data"]["image_size"]))
        return {**probe(rand.eval(), base, device), "images_per_s": None, "train_s": 0.0}

    device = pick_device(args.device)
    rows["random-init"] = cached(args.out / "random-init", random_row)
    if rows["random-init"] is None:
        from bssl.errors import UserError

        raise UserError(f"no finished rows in {args.out}" + (f" or {args.keep}" if args.keep else "")
                        + "; run without --report-only first")
    print(f"random-init: {rows['random-init']}", flush=True)
    for m in methods:
        method, epochs = budgets[m]
        cfg = apply_overrides(base, [f"teacher.method={method}"] + ([f"teacher.epochs={epochs}"] if epochs else []))
        out = args.out / m

        def method_row():
            resume = (out / CHECKPOINT_NAME).exists()
            res = train_teacher(cfg, out, resume=resume)  # its train_seconds spans every invocation of a resumed run
            encoder, info = load_teacher(res["checkpoint"])
            return {**probe(encoder, cfg, device), "images_per_s": res["images_per_s"],
                    "train_s": round(res["train_seconds"], 1), "resumed": resume,
                    "monitor_knn_acc": res["knn_acc"], "final_loss": res["history"][-1]["loss"],
                    "epochs": len(res["history"]), "fussl_base": teacher_settings(cfg).get("fussl_base")}

        row = cached(out, method_row)
        if row is None:  # --report-only and not trained yet
            continue
        rows[m] = row
        print(f"{m}: {row}", flush=True)
        if args.doc:
            write_doc(args, argv, base, rows, methods)

    if args.doc:
        write_doc(args, argv, base, rows, methods)
    table = table_text(args, base, rows)
    print(table)
    if args.json:
        write_json(args.json, {"preset": args.preset, "overrides": args.overrides, "methods": rows, "table": table,
                               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                           "loadavg": os.getloadavg(), "python": platform.python_version(),
                                           "torch": torch.__version__}})
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_teachers.py"))
