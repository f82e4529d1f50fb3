"""bssl eval: downstream protocols (linear, knn, svm, fewshot, semisup, transfer, rankme) on a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_preset_arguments, add_report_argument, config_from_args

HELP = "evaluate a student/teacher checkpoint or an exported .onnx model on downstream protocols"
PROTOCOL_CHOICES = ("linear", "knn", "svm", "fewshot", "semisup", "transfer", "rankme")
# "accuracy": top-1 of a classifier (exported .onnx, model.bssl or classifier .pt) from its own logits (bssl.classifier)
CLASSIFIER_PROTOCOLS = ("accuracy",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocols", nargs="*", metavar="PROTOCOL",
                   help=f"protocols to run ({', '.join(PROTOCOL_CHOICES)}, or 'all'); default: eval.protocols of the "
                        "preset; 'accuracy' alone: top-1 of a classifier or its export on the held-out split")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="student, teacher or classifier .pt (bssl, official MoCo/SimSiam, torchvision), an exported .onnx "
                        "or a model.bssl")
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
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="linear or semisup: write the student with the trained head as DIR/classifier.pt "
                        "(class names, preprocessing, held-out accuracy), ready for bssl export / bssl predict")
    p.add_argument("--force", action="store_true", help="with --save: replace a classifier already in DIR")
    p.add_argument("--compare", type=Path, default=None, metavar="MODEL",
                   help="accuracy: also measure this classifier (e.g. the classifier.pt an export came from) on the same images")
    add_report_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..eval import evaluate, format_table

    cfg = config_from_args(args)
    protocols = list(args.protocols)
    if protocols == ["all"]:
        protocols = list(PROTOCOL_CHOICES)
    for name in protocols:
        if name not in PROTOCOL_CHOICES + CLASSIFIER_PROTOCOLS:
            raise UserError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOL_CHOICES + CLASSIFIER_PROTOCOLS)} "
                            "or 'all'")
    if args.data_root and not args.dataset and cfg["data"]["dataset"] in ("shapes", "shapes-multilabel", "digits"):
        # a preset on generated data (cpu, smoke) says nothing about the folder's layout
        raise UserError("--data-root needs --dataset NAME (imagefolder, cifar10, cifar100, stl10, voc2007) to say its layout")
    if args.no_cache:
        cfg.setdefault("eval", {})["cache"] = False
    if args.voc_root:
        cfg.setdefault("eval", {})["voc_root"] = str(args.voc_root)
    out = args.out or Path("eval") / args.checkpoint.stem
    if "accuracy" in protocols:
        return _run_accuracy(args, cfg, protocols, out)
    if args.compare or args.force and not args.save:
        raise UserError(f"{'--compare' if args.compare else '--force'} applies to "
                        f"{'the accuracy protocol' if args.compare else '--save'}")
    save = None
    if args.save:
        from ..classifier import ClassifierTarget

        save = ClassifierTarget(args.save, force=args.force, config=cfg, source=args.checkpoint)
    results = evaluate(args.checkpoint, cfg, protocols or None, out, dataset=args.dataset, data_root=args.data_root,
                       report_path=args.report, save=save)
    print(format_table(results, title=f"Downstream evaluation: {args.checkpoint.name}"))
    print(f"report: {args.report or out / 'eval.json'}  table: {out / 'eval.md'}")
    if save is not None and save.saved:
        print(save.describe())
    return 0


def _run_accuracy(args: argparse.Namespace, cfg, protocols, out: Path) -> int:
    from ..classifier import accuracy_summary, evaluate_accuracy
    from ..errors import UserError
    from ..eval import format_table

    if protocols != ["accuracy"]:
        raise UserError("accuracy runs on its own (it reads the classifier's logits, the other protocols its features)")
    if args.save:
        raise UserError("--save applies to linear and semisup, not to accuracy")
    results = evaluate_accuracy(args.checkpoint, cfg, out, compare=args.compare, dataset=args.dataset,
                                data_root=args.data_root, report_path=args.report)
    print(format_table(results, title=f"Classifier accuracy: {args.checkpoint.name}"))
    print(accuracy_summary(results["accuracy"]))
    print(f"report: {args.report or out / 'eval.json'}  table: {out / 'eval.md'}")
    return 0
