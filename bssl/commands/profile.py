"""bssl profile: BOPs, FLOPs, OPs, parameters, bytes and activation memory of a student."""

from __future__ import annotations

import argparse
import json

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


def run(args: argparse.Namespace) -> int:
    from ..profile import format_table, profile
    from ..utils import _json_default, write_json

    report = profile(args.model, input_size=args.input_size, width=args.width, stem=args.stem,
                     num_classes=args.num_classes, word_bits=args.word_bits)
    if args.json:
        print(json.dumps(report, indent=2, default=_json_default))
    else:
        print(format_table(report, layers=not args.no_layers))
    if args.report is not None:
        write_json(args.report, report)
    return 0
