"""bssl eval: downstream protocols (linear, knn, svm, fewshot, semisup, transfer, rankme) on a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_preset_arguments, add_report_argument, config_from_args

HELP = "evaluate a student/teacher checkpoint or an exported .onnx model on downstream protocols"
PROTOCOL_CHOICES = ("linear", "knn", "svm", "fewshot", "semisup", "transfer", "rankme")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocols", nargs="*", metavar="PROTOCOL",
                   help=f"protocols to run ({', '.join(PROTOCOL_CHOICES)}, or 'all'); default: eval.protocols of the preset")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="student or teacher .pt (bssl, official MoCo/SimSiam, torchvision) or an exported .onnx")
    add_preset_arguments(p, default="cpu")
    p.add_argument("--dataset", default=None,
                   help="evaluate on this dataset instead of the preset's data.dataset (shapes, digits, imagefolder, "
                        "cifar10, cifar100, stl10, voc2007, ...); SVM and few-shot use it too, except shapes-multilabel "
                        "for shapes and VOC2007 with --voc-root (eval.svm_dataset forces one)")
    p.add_argument("--data-root", default=None, help="folder of the on-disk dataset given with --dataset")
    p.add_argument("--voc-root", default=None, metavar="DIR",
                   help="run SVM and few-shot SVM on PASCAL VOC2007 in DIR (the published VOC07 protocol); sets eval.voc_root")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: eval/<checkpoint name>)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    add_report_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..eval import evaluate, format_table

    cfg = config_from_args(args)
    protocols = list(args.protocols)
    if protocols == ["all"]:
        protocols = list(PROTOCOL_CHOICES)
    for name in protocols:
        if name not in PROTOCOL_CHOICES:
            raise UserError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOL_CHOICES)} or 'all'")
    if args.data_root and not args.dataset:
        raise UserError("--data-root needs --dataset NAME (imagefolder, cifar10, cifar100, stl10, voc2007) to say its layout")
    if args.no_cache:
        cfg.setdefault("eval", {})["cache"] = False
    if args.voc_root:
        cfg.setdefault("eval", {})["voc_root"] = str(args.voc_root)
    out = args.out or Path("eval") / args.checkpoint.stem
    results = evaluate(args.checkpoint, cfg, protocols or None, out, dataset=args.dataset, data_root=args.data_root,
                       report_path=args.report)
    print(format_table(results, title=f"Downstream evaluation: {args.checkpoint.name}"))
    print(f"report: {args.report or out / 'eval.json'}  table: {out / 'eval.md'}")
    return 0
