"""Subcommands of the `bssl` CLI. Shared argument helpers live here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from ..config import apply_overrides, load_preset


def add_preset_arguments(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--preset", default=default, help="preset name (smoke, cpu, imagenet-bssl) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set distill.epochs_stage1=3 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides run.seed)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (overrides run.device)")


def add_report_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", type=Path, default=None,
                   help="where to write the JSON report (default: inside the output folder)")


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    cfg = apply_overrides(load_preset(args.preset), args.overrides)
    if getattr(args, "seed", None) is not None:
        cfg.setdefault("run", {})["seed"] = args.seed
    if getattr(args, "device", None) is not None:
        cfg.setdefault("run", {})["device"] = args.device
    return cfg
