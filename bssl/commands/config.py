"""bssl config: show the effective configuration of a preset with overrides, and where each value came from."""

from __future__ import annotations

import argparse

from . import add_preset_arguments, config_with_sources

HELP = "print the effective configuration (preset < --set) as TOML, each value with its source"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help=HELP, description=HELP)
    add_preset_arguments(show, default="cpu")
    show.add_argument("--dataset", default=None, help="dataset name (overrides data.dataset)")
    show.add_argument("--data-root", default=None, help="folder of an on-disk dataset (overrides data.root)")
    keys = sub.add_parser("keys", help="list every config key with its type, default and meaning")
    keys.add_argument("section", nargs="?", default=None, help="only this section")


def run(args: argparse.Namespace) -> int:
    if args.action == "keys":
        return _keys(args.section)
    cfg, sources = config_with_sources(args)
    from ..config import to_toml

    print(f"# effective configuration of preset {cfg['preset']['name']!r}; '# default' marks values nobody set")
    print(to_toml(cfg, sources), end="")
    from ..config import teacher_settings

    method = cfg["teacher"]["method"]
    print(f"\n# teacher method {method!r} runs with (its defaults < [teacher] < [teacher.{method}]):")
    for key, value in teacher_settings(cfg).items():
        print(f"#   {key} = {value!r}")
    return 0


def _keys(section) -> int:
    from ..config import describe_keys
    from ..errors import UserError

    table = describe_keys()
    if section is not None and section not in table:
        raise UserError(f"unknown section {section!r}; sections: {', '.join(table)}")
    for name, keys in table.items():
        if section is not None and name != section:
            continue
        print(f"[{name}]")
        for key, k in sorted(keys.items()):
            kind = f"list of {k.item.__name__}" if k.type is list and k.item else k.type.__name__
            rng = ""
            if k.choices:
                rng = " one of " + ", ".join(map(str, k.choices))
            elif k.min is not None or k.max is not None:
                lo = "" if k.min is None else f"{'>' if k.min_exclusive else '>='} {k.min:g}"
                hi = "" if k.max is None else f"<= {k.max:g}"
                rng = " " + ", ".join(x for x in (lo, hi) if x)
            print(f"  {key:<26} {kind:<14} default {k.default!r:<12}{rng}  {k.help}".rstrip())
    return 0
