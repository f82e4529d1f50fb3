"""The `bssl` command: a thin layer over the Python API in bssl.commands.*.

Each subcommand lives in bssl/commands/<name>.py and exposes HELP, add_arguments(parser) and
run(args) -> int. User mistakes raise bssl.errors.UserError, printed here as one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from . import __version__
from .errors import exit_status

SUBCOMMANDS = ("run", "teacher", "distill", "export", "bench", "eval", "predict", "profile", "config")


class _HelpFormatter(argparse.HelpFormatter):
    """Show a default only where it says something and the help text does not already name it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS)
                or action.option_strings == [] and action.nargs in ("*", "+")):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bssl",
        description="Binary self-supervised networks from pretraining to the edge.",
    )
    parser.add_argument("--version", action="version", version=f"bssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"bssl.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=_HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(lambda: args._module.run(args), f"bssl {args.command}")

if __name__ == "__main__":
    sys.exit(main())
