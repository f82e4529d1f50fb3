"""Subcommands of the `bssl` CLI. Shared argument helpers live here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..config import Sources, resolve


def add_preset_arguments(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--preset", default=default, help="preset name (smoke, cpu, cifar10, imagenet-bssl) or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set distill.epochs_stage1=3 (repeatable; beats every "
                        "preset value, [teacher.<method>] tables included)")
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides run.seed)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (overrides run.device)")


def add_report_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", type=Path, default=None,
                   help="where to write the JSON report (default: inside the output folder)")


# command-line flags that set a config key, when the command has them
_FLAG_KEYS = {"seed": "run.seed", "device": "run.device", "dataset": "data.dataset", "data_root": "data.root"}


def config_with_sources(args: argparse.Namespace, extra: Optional[Dict[str, Any]] = None
                        ) -> Tuple[Dict[str, Any], Sources]:
    """The validated configuration of a command: preset < --set < flags (`extra`: {'section.key': value})."""
    flags = {key: getattr(args, attr, None) for attr, key in _FLAG_KEYS.items()}
    if flags["data.root"] is not None:
        flags["data.root"] = str(flags["data.root"])
    flags.update(extra or {})
    return resolve(args.preset, args.overrides, flags)


def config_from_args(args: argparse.Namespace, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return config_with_sources(args, extra)[0]
