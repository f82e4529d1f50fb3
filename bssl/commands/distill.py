"""bssl distill: BSSL distillation of an FP teacher into a binary student (and the baselines).

Runs as one process, or data-parallel under torchrun (distill.batch_size is the global batch):
  torchrun --nproc_per_node 2 -m bssl distill --teacher runs/cpu/teacher-simclr/teacher.pt --preset cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_preset_arguments, add_report_argument, config_from_args

HELP = "distil a FP self-supervised teacher into a 1-bit ReActNet student (BSSL, 2 stages) or run a baseline"

METHOD_CHOICES = ("bssl", "direct-mocov2", "direct-byol", "direct-simclr", "s2bnn", "supervised-kl")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_preset_arguments(p, default="cpu")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint (bssl teacher.pt, official MoCo/SimSiam .pth.tar, torchvision .pth); "
                        "not needed by the direct-SSL baselines")
    p.add_argument("--method", default=None, choices=METHOD_CHOICES, help="objective (default: distill.method or bssl)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/distill-<method>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the distillation in --out from its last epoch")
    g.add_argument("--force", action="store_true", help="start over, replacing the distillation files in --out")
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="run one stage only")
    p.add_argument("--init", type=Path, default=None,
                   help="stage-1 checkpoint (stage1.pt, or a student.pt) to start stage 2 from")
    add_report_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..train import distributed as D

    return D.run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..distill import run_distill
    from ..errors import UserError
    from ..train import distributed as D
    from ..utils import pick_device, write_json

    cfg = config_from_args(args, {"distill.method": args.method})
    D.init_from_env(pick_device(str(cfg["run"]["device"])))
    method = cfg["distill"]["method"]
    out = args.out or Path("runs") / f"distill-{method}"
    only_stage2 = args.stage == 2 and args.init is None

    def check():
        if args.init is not None and args.stage != 2:
            raise UserError("--init starts stage 2 from a stage-1 checkpoint; pass it together with --stage 2")
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder; choose another --out")
        if args.resume and not out.is_dir():
            raise UserError(f"--resume: {out} does not exist; drop --resume to start a new distillation")
        has_run = out.is_dir() and any((out / n).exists()
                                       for n in ("stage1.pt", "stage2.pt", "student.pt", "stage1", "stage2"))
        if has_run and not (args.resume or args.force or only_stage2):
            raise UserError(f"{out} already holds a distillation; pass --resume to continue it or --force to start over")

    D.agree(check)  # on every rank before rank 0 writes into --out
    result = run_distill(cfg, args.teacher, out, resume=args.resume or only_stage2, method=method, stage=args.stage,
                         init=args.init)
    if D.rank() != 0:
        return 0
    if args.report is not None:
        write_json(args.report, result)
    last = result["history"][-1] if result["history"] else {}
    print(f"{method}: stages {result['stages']}, {len(result['history'])} epochs, final loss "
          f"{last.get('loss', float('nan')):.4f}, {result['seconds']:.0f} s")
    print(f"student: {result['checkpoint']}")
    for p in result["plots"]:
        print(f"plot: {p}")
    return 0
