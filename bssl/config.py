"""Configs as data: presets are TOML files in bssl/presets; `--set a.b=value` overrides keys."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from .errors import UserError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name_or_path: str) -> Dict[str, Any]:
    """Load a preset by name (smoke, cpu, imagenet-bssl, ...) or from a TOML file path."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise UserError(f"unknown preset {name_or_path!r}; known: {', '.join(preset_names())} (or pass a .toml file)")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"preset file {path} is not valid TOML: {exc}") from None
    base = cfg.pop("inherit", None)
    if base:
        cfg = merge(load_preset(base), cfg)
    cfg.setdefault("preset", {})["name"] = path.stem
    return cfg


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def as_bool(value) -> Optional[bool]:
    """A config flag as bool (true/false in any case from --set or TOML); None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply `section.key=value` overrides; values parse as JSON when they can (numbers, lists, bools)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise UserError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return cfg
