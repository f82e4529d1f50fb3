"""bssl profile: BOPs, FLOPs, OPs, parameters, bytes and activation memory of a student."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import add_report_argument

HELP = "count BOPs/FLOPs/OPs, binary/FP parameters, FP32 vs deployed bytes of a student model or checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered student name (reactnet-a, reactnet-b, reactnet-c, birealnet-18, reactnet-18) "
                                  "or an FP backbone (resnet18, resnet50), or the path of a student checkpoint (.pt) or of an "
                                  "official ReActNet .pth.tar")
    p.add_argument("--input-size", type=int, default=None,
                   help="square input size in pixels (default: 224 for a name, the checkpoint's size for a file)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (model names only)")
    p.add_argument("--stem", default="auto", choices=["auto", "small", "imagenet"], help="stem (model names only)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (model names only)")
    p.add_argument("--word-bits", type=int, default=64, choices=[32, 64],
                   help="word size the binary weights are packed into for the deployed size")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of a table")
    p.add_argument("--no-layers", action="store_true", help="print only the totals in the table")
    add_report_argument(p)


def _looks_like_path(s: str) -> bool:
    return s.endswith((".pt", ".pth")) or "/" in s or Path(s).is_file()


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import UserError
    from ..models import BACKBONES, build_backbone, build_model, load_official_reactnet, load_student
    from ..models.common import resolve_stem
    from ..profile import format_table, profile_model
    from ..utils import _json_default, write_json

    if _looks_like_path(args.model):
        try:
            model = load_student(args.model)
        except UserError as exc:
            if "not a bssl checkpoint" not in str(exc):
                raise
            model = load_official_reactnet(args.model)  # a released liuzechun/ReActNet checkpoint
        size = args.input_size or model.spec["input_size"]
    elif args.model in BACKBONES:
        # FP teacher backbones, for side-by-side costs (no classifier: they end at the pooled features)
        size = args.input_size or 224
        with torch.device("meta"):
            model = build_backbone(args.model, small_stem=resolve_stem(args.stem, size) == "small")
        model.spec = {"name": args.model, "input_size": size, "stem": resolve_stem(args.stem, size)}
    else:
        size = args.input_size or 224
        # counting needs shapes only, so a named model is built on the meta device (no memory, no init)
        with torch.device("meta"):
            model = build_model(args.model, num_classes=args.num_classes, input_size=size, width=args.width,
                                stem=args.stem)
    if size != model.spec["input_size"] and "num_classes" in model.spec:
        # a checkpoint profiled at another size: validate that size against its stem
        with torch.device("meta"):
            build_model(model.spec["name"], num_classes=model.spec["num_classes"], input_size=size,
                        width=model.spec["width"], stem=model.spec["stem"])
    report = profile_model(model, size, word_bits=args.word_bits)
    if args.json:
        print(json.dumps(report, indent=2, default=_json_default))
    else:
        print(format_table(report, layers=not args.no_layers))
    if args.report is not None:
        write_json(args.report, report)
    return 0
