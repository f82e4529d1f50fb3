"""bssl teacher: pretrain a full-precision self-supervised teacher (thin layer over bssl.teachers).

Runs as one process, or data-parallel under torchrun (teacher.batch_size is the global batch):
  torchrun --nproc_per_node 2 -m bssl teacher --method mocov2 --preset cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from . import add_preset_arguments, add_report_argument, config_from_args

HELP = "pretrain an FP self-supervised teacher (mocov2, byol, simsiam, simsiam-kaug, ensiam, fussl, simclr)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_preset_arguments(p, default="cpu")
    p.add_argument("--method", default=None, help="teacher method (overrides teacher.method of the preset)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<preset>/teacher-<method>)")
    p.add_argument("--dataset", default=None, help="dataset name (overrides data.dataset)")
    p.add_argument("--data-root", default=None, help="folder of an on-disk dataset")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    g.add_argument("--force", action="store_true", help="discard the checkpoint in --out and start over")
    add_report_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..train import distributed as D

    return D.run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..teachers import train_teacher
    from ..teachers.train import CHECKPOINT_NAME, LOG_NAME
    from ..train import distributed as D
    from ..utils import pick_device, write_json

    cfg = config_from_args(args, {"teacher.method": args.method})
    D.init_from_env(pick_device(str(cfg["run"]["device"])))
    method = cfg["teacher"]["method"]
    out = args.out or Path("runs") / cfg["preset"]["name"] / f"teacher-{method}"
    ckpt = out / CHECKPOINT_NAME
    main = D.rank() == 0

    def check():
        if out.exists() and not out.is_dir():
            raise UserError(f"output path {out} exists and is not a folder; choose another --out")
        if args.resume and not ckpt.exists():
            raise UserError(f"--resume: {out} holds no teacher checkpoint ({CHECKPOINT_NAME}); drop --resume to start training")
        if ckpt.exists() and not (args.resume or args.force):
            raise UserError(f"{ckpt} already exists; pass --resume to continue it or --force to start over")

    D.agree(check)  # on every rank before rank 0 changes the folder
    report_path = args.report or out / "teacher_report.json"
    if args.force and main:
        for name in (CHECKPOINT_NAME, LOG_NAME, "teacher_report.json"):
            (out / name).unlink(missing_ok=True)
    D.barrier()
    result = train_teacher(cfg, out, resume=args.resume)
    if main:
        write_json(report_path, {"command": "teacher", "preset": cfg["preset"]["name"], "config": cfg, **result})
        knn = "n/a (multi-label data)" if result["knn_acc"] is None else f"{result['knn_acc']:.4f}"
        print(f"teacher {result['method']}: kNN accuracy {knn}, {result['images_per_s']:.1f} images/s")
        print(f"checkpoint: {result['checkpoint']}  report: {report_path}")
    return 0
