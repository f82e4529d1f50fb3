"""`bssl predict`: top-K classes of images from a classifier (PyTorch checkpoint, exported ONNX or model.bssl).

    bssl predict clf/classifier.pt photo.jpg more/ --top 3 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "classify images with a classifier (.pt from `bssl eval linear|semisup --save`, its .onnx export or model.bssl)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="classifier.pt, an exported model.onnx or a model.bssl")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="image files or folders (folders: every image file inside, sorted)")
    p.add_argument("--top", type=int, default=5, help="classes shown per image")
    p.add_argument("--json", action="store_true", help="print JSON (one list of {image, top: [{class, index, "
                                                         "probability}]}) instead of text")
    p.add_argument("--input-size", type=int, default=None,
                   help="check that the model was built for this input size (images are resized to the model's)")


def run(args: argparse.Namespace) -> int:
    from ..classifier import load_predictor, predict

    model = load_predictor(args.model)
    rows = predict(model, args.images, top=args.top, input_size=args.input_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(c["class"]) for r in rows for c in r["top"])
    for r in rows:
        print(r["image"])
        for c in r["top"]:
            print(f"  {c['class']:<{width}}  {c['probability']:.4f}")
    return 0
