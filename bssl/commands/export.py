"""`bssl export`: a student checkpoint -> ONNX, packed ONNX, TVM libraries, LCE .tflite, model.bssl
(alone, or with --target a folder holding a static bssl-infer for that board).

    bssl export --checkpoint S --format F [--target T] [--float16] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from . import add_preset_arguments, add_report_argument, config_from_args

HELP = ("export a student: onnx, onnx-packed (1-bit ai.bssl nodes), tvm (x86-64/aarch64/armv7 library), lce (.tflite), "
        "bssl (model.bssl for the native runtime / bssl-infer)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="student checkpoint written by bssl distill, or a classifier.pt written by "
                        "`bssl eval linear|semisup --save` (its class names travel with the export)")
    p.add_argument("--format", dest="formats", action="append", default=None, metavar="F",
                   help="onnx, onnx-packed, tvm, lce, bssl or all; repeatable or comma-separated (default [export].formats)")
    p.add_argument("--target", dest="targets", action="append", default=None, metavar="T",
                   help="tvm target: x86-64 (this CPU's ISA), x86-64-avx2, x86-64-avx512, aarch64, armv7 "
                        "(default [export].tvm_targets); bssl target: x86-64, aarch64, armv7, a folder "
                        "bssl-<target> with model.bssl, a static bssl-infer and README.txt (default: model.bssl "
                        "alone); repeatable")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: exports/ beside the checkpoint)")
    p.add_argument("--batch", type=int, default=None, help="tvm: batch size the library is built for (default [export].batch)")
    p.add_argument("--check-samples", type=int, default=None,
                   help="random inputs compared against the PyTorch student after export, 0 to skip "
                        "(default [export].check_samples)")
    p.add_argument("--float16", action="store_true", default=None,
                   help="bssl: store the float parts as float16 (about 40%% smaller for ReActNet-A; converted to "
                        "float32 at load, so results differ from the float32 file by float16 rounding; "
                        "default [export].float16)")
    p.add_argument("--larq-python", type=Path, default=None,
                   help="lce: python of the larq environment (default .larq-venv/bin/python)")
    add_report_argument(p)
    add_preset_arguments(p)


def _split(values):
    out = []
    for v in values or ():
        out.extend(s.strip() for s in str(v).split(",") if s.strip())
    return out


def run(args: argparse.Namespace) -> int:
    from ..export import BSSL_TARGETS, FORMATS, export_model
    from ..utils import write_json

    cfg = config_from_args(args)["export"]
    formats = _split(args.formats) or list(cfg["formats"])
    if "all" in formats:
        formats = list(FORMATS.names())
    for fmt in formats:
        FORMATS.get(fmt)  # UserError on unknown names before any work
    explicit_targets = _split(args.targets)
    targets = explicit_targets or list(cfg["tvm_targets"])
    if explicit_targets and not {"tvm", "bssl"} & set(formats):
        raise UserError("--target applies to --format tvm and --format bssl; add one of them or drop --target")
    bad = [t for t in explicit_targets if t not in BSSL_TARGETS]
    if "bssl" in formats and bad and "tvm" not in formats:
        raise UserError(f"--target {bad[0]!r} is not a bssl target; choose from {', '.join(BSSL_TARGETS)}")
    bssl_targets = [t for t in explicit_targets if t in BSSL_TARGETS] or [None]
    out = args.out or Path(args.checkpoint).resolve().parent / "exports"
    check = args.check_samples if args.check_samples is not None else int(cfg["check_samples"])
    results = []
    for fmt in formats:
        for target in (targets if fmt == "tvm" else bssl_targets if fmt == "bssl" else [None]):
            opts = {"check_samples": check}
            if fmt == "tvm":
                opts["batch"] = args.batch or int(cfg["batch"])
            if fmt == "bssl":
                opts["float16"] = bool(args.float16) if args.float16 is not None else bool(cfg["float16"])
            if fmt == "lce" and args.larq_python:
                opts["larq_python"] = args.larq_python
            res = export_model(args.checkpoint, fmt, out, target=target, **opts)
            results.append(res)
            eq = res.get("equivalence")
            checked = (f"  top-1 agree {eq['top1_agreement']:.3f}, max rel err {eq['max_rel_error']:.2e} "
                       f"({eq['samples']} inputs, {eq['runtime']})") if eq else ""
            tc = res.get("target_check")
            if tc:
                checked += (f"  bssl-infer ({tc['runner']}): logits {'identical' if tc['identical'] else 'max abs diff %.2e' % tc['max_abs_diff']}"
                            f" to this machine's runtime")
            pops = res.get("popcount_instructions")
            if pops:
                checked += f"  {res['elf_machine']} ELF, NEON popcounts: {sum(pops.values())}"
            classes = res.get("classes") or (res.get("classifier") or {}).get("classes")
            if classes:
                checked += f"  {len(classes)} classes"
            print(f"{fmt}{'/' + res['target'] if res.get('target') else ''}: {res['path']} "
                  f"({res['bytes'] / 1e6:.2f} MB){checked}")
    report = args.report or Path(out) / "export.json"
    write_json(report, {"checkpoint": str(args.checkpoint), "exports": results})
    print(f"report: {report}")
    return 0
