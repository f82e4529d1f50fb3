"""bssl run: the whole path (teacher, BSSL distillation, export, measurement, evaluation) in one command.

Runs as one process, or under torchrun, where the teacher and the distillation train data-parallel on every
rank and the other steps run on rank 0:
  torchrun --nproc_per_node 2 -m bssl run --preset cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_preset_arguments, config_from_args

HELP = "run the whole path on the embedded default data (or --data-root) and write one report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_preset_arguments(p, default="cpu")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="use this teacher checkpoint (bssl, official MoCo/SimSiam .pth.tar, torchvision) instead of pretraining one")
    p.add_argument("--dataset", default=None, help="dataset name (overrides data.dataset), e.g. shapes, digits, imagefolder")
    p.add_argument("--data-root", default=None, help="folder of an on-disk dataset (ImageFolder, CIFAR, STL-10, VOC2007)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out from where it stopped")
    g.add_argument("--force", action="store_true", help="delete the run in --out and start over")


def run(args: argparse.Namespace) -> int:
    from ..train import distributed as D

    return D.run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import run_pipeline
    from ..train import distributed as D
    from ..utils import pick_device

    cfg = config_from_args(args)
    # under torchrun the teacher and the distillation train data-parallel; everything after them runs on rank 0
    D.init_from_env(pick_device(str(cfg["run"]["device"])))
    main = D.is_main()
    out = args.out or Path("runs") / cfg["preset"]["name"]
    run_pipeline(cfg, out, resume=args.resume, force=args.force, teacher=args.teacher)
    if not main:
        return 0
    print((Path(out) / "report.md").read_text())
    print(f"run folder: {out}  (report.json, report.md, checkpoints, exports, plots)")
    return 0
