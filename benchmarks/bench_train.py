"""Training throughput: images/s per process of teacher pretraining and BSSL stage 1 / stage 2.

    python benchmarks/bench_train.py [--preset cpu] [--set SECTION.KEY=VALUE ...] [--batch N]
                                     [--steps 4] [--procs 1 2] [--threads T] [--precision fp32 bf16]
                                     [--source synthetic loader] [--parts teacher stage1 stage2]
                                     [--methods simclr mocov2 ...] [--out DIR]

Each row runs the trainers' own step (bssl.train.Stepper on the modules teachers/train.py and
bssl/distill/trainer.py build, DDP + synchronised BN on 2 gloo processes) at the preset's sizes
(global batch, image size, student width), after one warm-up step. `synthetic` feeds batches
generated once in memory (the compute alone); `loader` draws them from the preset's dataset through
its augmentations and make_loader, as training does. With P processes each runs cores/P threads
(`--threads 1`: one thread each, the setting of the 1-vs-2-process scaling target).
`--methods` times teacher pretraining once per method (default: the preset's). `--batch`
replaces both global batch sizes (a 224 px ResNet-50 step at the paper's 256 per GPU does not fit a
CPU's time budget). The last column extrapolates one ImageNet-1k epoch (1,281,167 images) from the
total images/s; below the table, the paper's 200 + 200 BSSL epochs from each setting's stage rows.
Writes bench_train.json and bench_train.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PARTS = ("teacher", "stage1", "stage2")
IMAGENET_TRAIN_IMAGES = 1_281_167
PAPER_STAGE_EPOCHS = 200  # BSSL trains each of its two stages 200 epochs on ImageNet-1k


def _setup(part: str, cfg: Dict[str, Any], device: torch.device, precision: str):
    """(model to step, stepper, forward(model, batch), views pipeline, batch plan) for one part."""
    from bssl.distill import METHODS
    from bssl.distill.trainer import distill_forward, stage_modules, stage_stepper
    from bssl.distill.views import distill_views
    from bssl.teachers import build_method
    from bssl.teachers.train import make_optimizer
    from bssl.train import Stepper, batch_plan, memory_format
    from bssl.train import distributed as D
    from bssl.config import teacher_settings

    torch.manual_seed(0)
    if part == "teacher":
        t = teacher_settings(cfg)
        method, info = build_method(cfg)
        # FUSSL's first phase (the others have one)
        method.prepare_epoch(0, int(t["epochs"]), {"plain_loader": None, "num_train": 0, "device": device})
        if D.is_distributed():
            method = D.convert_sync_batchnorm(method, device)
        method.to(device).train()
        model = torch.nn.parallel.DistributedDataParallel(method) if D.is_distributed() else method
        stepper = Stepper(make_optimizer(method, t), list(method.parameters()), device=device, precision=precision,
                          base_lr=float(t["lr"]), lr_factor=lambda i: 1.0)

        def forward(m, batch):
            views, index = batch
            loss, logs = m(views, index)
            return {"loss": loss, **logs}

        plan = batch_plan("teacher", int(t["batch_size"]), int(t["accumulate"]))
        return model, stepper, forward, ("teacher", method.views(info["image_size"])), plan
    stage = 1 if part == "stage1" else 2
    teacher, _ = build_method(cfg)
    h = teacher.encoder.requires_grad_(False).eval().to(device)
    dcfg = cfg["distill"]
    fmt = memory_format(dcfg.get("channels_last", "auto"), device, precision)
    student, method, model = stage_modules(cfg, dcfg, stage, METHODS.get("bssl"), {"feature_dim": int(teacher.feature_dim)},
                                           0, device, fmt=fmt)
    model.train()
    stepper = stage_stepper(student, method, dcfg, device, 1000, 0, precision)
    fwd = distill_forward(h.to(memory_format=fmt), device, 0, 1000, fmt)
    plan = batch_plan("distill", int(dcfg["batch_size"]), int(dcfg["accumulate"]))
    return model, stepper, (lambda m, batch: fwd(m, (batch[0], None))), ("distill", distill_views(cfg, 2, "byol")), plan


def _batches(source: str, views_spec, plan, cfg, steps: int):
    from bssl.data import dataset_from_config
    from bssl.train import loader_workers, make_loader
    from bssl.train import steps as train_steps

    size = int(cfg["data"]["image_size"])
    n = plan.micro_batch
    kind, transform = views_spec
    if source == "synthetic":
        gen = torch.Generator().manual_seed(0)
        # the method's own number and sizes of views (K-aug, EnSiam: K; FUSSL: 2 per block; multi-crop)
        one = transform(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
        batch = ([torch.randn(n, *v.shape, generator=gen) for v in one], torch.arange(n))
        for _ in range(steps):
            yield [batch] * plan.accumulate
        return
    ds = dataset_from_config(cfg, "train", transform=transform)

    def with_index(b):
        views, label = b
        return list(views), torch.arange(len(label))

    epoch = 0
    while True:
        loader = make_loader(ds, plan, 0, epoch, workers=loader_workers(cfg["data"]["workers"], "cpu"))
        for group in train_steps(loader, plan.accumulate):
            yield [with_index(b) for b in group]
            steps -= 1
            if steps <= 0:
                return
        epoch += 1


def _measure(part, precision, source, steps, cfg, method=None) -> Dict[str, float]:
    device = torch.device("cpu")
    torch.manual_seed(0)
    if method is not None:
        cfg = {**cfg, "teacher": {**cfg["teacher"], "method": method}}
    model, stepper, forward, views_spec, plan = _setup(part, cfg, device, precision)
    it = _batches(source, views_spec, plan, cfg, steps + 1)
    stepper.step(model, 0, next(it), forward)  # warm-up: allocator, oneDNN primitives
    t0 = time.perf_counter()
    done = 0
    for i, micro in enumerate(it):
        stepper.step(model, i + 1, micro, forward)
        done += 1
    seconds = time.perf_counter() - t0
    return {"images_per_s": plan.micro_batch * plan.accumulate * done / seconds, "seconds_per_step": seconds / done,
            "micro_batch": plan.micro_batch}


def _worker(rank, world, port, jobs, cfg, threads, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = []
        for job in jobs:
            try:
                rows.append({**job, **_measure(job["part"], job["precision"], job["source"], job["steps"], cfg, job.get("method"))})
            except FloatingPointError as exc:  # raised on every rank together (Stepper reduces the check)
                rows.append({**job, "images_per_s": None, "seconds_per_step": None, "micro_batch": None,
                             "error": str(exc)})
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _label(row: Dict[str, Any]) -> str:
    return f"teacher {row['method']}" if row.get("method") else row["part"]


def _paper_schedule(rows: List[Dict[str, Any]], sizes: str) -> List[str]:
    """Days for the paper's 200 + 200 ImageNet-1k epochs of BSSL at the timed sizes, per setting with both stages."""
    out = []
    seen = set()
    for r in rows:
        key = (r["precision"], r["source"], r["procs"])
        if key in seen:
            continue
        seen.add(key)
        speed = {q["part"]: q["images_per_s"] * q["procs"] for q in rows
                 if (q["precision"], q["source"], q["procs"]) == key and q["part"] in ("stage1", "stage2")
                 and q.get("images_per_s")}
        if len(speed) == 2:
            hours = sum(PAPER_STAGE_EPOCHS * IMAGENET_TRAIN_IMAGES / v / 3600 for v in speed.values())
            out.append(f"- BSSL 200 + 200 epochs over ImageNet-1k's {IMAGENET_TRAIN_IMAGES:,} images at {sizes}, "
                       f"{r['precision']}, {r['source']} batches, {r['procs']} x {r['threads']}: {hours:,.0f} h "
                       f"({hours / 24:,.0f} days) on this machine")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--batch", type=int, default=0, help="global batch of teacher and distillation (0: the preset's)")
    p.add_argument("--methods", nargs="+", default=None, help="teacher methods to time (default: the preset's)")
    p.add_argument("--steps", type=int, default=4, help="timed optimiser steps per row (after 1 warm-up step)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0: cores / processes); 1 pins every process to one thread")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--source", nargs="+", default=["synthetic", "loader"], choices=("synthetic", "loader"))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--out", type=Path, default=Path("runs/bench_train"))
    args = p.parse_args(argv)

    from bssl.config import apply_overrides, load_preset
    from bssl.train.distributed import free_port

    overrides = [*args.overrides, 'run.device="cpu"']
    if args.batch:
        overrides += [f"teacher.batch_size={args.batch}", f"distill.batch_size={args.batch}"]
    cfg = apply_overrides(load_preset(args.preset), overrides)
    cores = os.cpu_count() or 1
    args.out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    methods = args.methods or [cfg["teacher"]["method"]]
    jobs = [{"part": part, "precision": prec, "source": src, "steps": args.steps,
             **({"method": m} if part == "teacher" else {})}
            for part in args.parts for m in (methods if part == "teacher" else [None])
            for prec in args.precision for src in args.source]
    for procs in args.procs:
        threads = args.threads or max(cores // procs, 1)
        tmp = args.out / f".rows{procs}.json"
        if procs == 1:
            _worker(0, 1, 0, jobs, cfg, threads, str(tmp))
        else:
            mp.spawn(_worker, args=(procs, free_port(), jobs, cfg, threads, str(tmp)), nprocs=procs, join=True)
        for row in json.loads(tmp.read_text()):
            rows.append({**row, "procs": procs, "threads": threads})
            speed = "stopped: " + row["error"] if row.get("error") else f"{row['images_per_s']:7.1f} images/s per process"
            print(f"{_label(row):16s} {row['precision']:5s} {row['source']:9s} procs {procs}: {speed}", flush=True)
        tmp.unlink()
    from bssl.bench.machine import describe_machine

    m = describe_machine()
    bf16 = ", ".join(f for f in m["simd_flags"] if "bf16" in f)
    machine = (f"{m['cpu']}, {cores} logical CPUs (bf16 units: {bf16 or 'none'}), torch {torch.__version__}, "
               f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t, d = cfg["teacher"], cfg["distill"]
    lines = [f"Machine: {machine}; load average {load:.1f} at the end. Preset {args.preset}"
             f"{' with ' + ', '.join(args.overrides) if args.overrides else ''}: global batch "
             f"{t['batch_size']} (teacher) / {d['batch_size']} (distill), {cfg['data']['image_size']} px, "
             f"teacher {t['arch']}, student {d['student']} width {d['width']}; {args.steps} timed steps.", "",
             "| part | precision | batches | processes x threads | micro-batch | images/s per process | s/step "
             "| total images/s | h per ImageNet-1k epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("images_per_s") is None:
            speed = f"{r['error']} | - | - | -"
        else:
            total = r["images_per_s"] * r["procs"]
            speed = (f"{r['images_per_s']:.1f} | {r['seconds_per_step']:.2f} | {total:.1f} | "
                     f"{IMAGENET_TRAIN_IMAGES / total / 3600:.1f}")
        lines.append(f"| {_label(r)} | {r['precision']} | {r['source']} | {r['procs']} x {r['threads']} | "
                     f"{r['micro_batch'] or '-'} | {speed} |")
    sizes = f"{cfg['data']['image_size']} px with the {d['student']} width {d['width']} student"
    lines += ["", *_paper_schedule(rows, sizes)]
    (args.out / "bench_train.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (args.out / "bench_train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_train.py"))
