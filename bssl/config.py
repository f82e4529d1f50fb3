"""Typed, validated configuration: every key declared once, with its type, default and range.

A configuration is built from layers, later layers winning: the shipped presets of an `inherit`
chain (parent first), a user's TOML file, then `--set section.key=value` and the command's own
flags (`--seed`, `--dataset`, ...). Sections `run data teacher distill eval export bench` are
declared in SECTIONS below; method-specific keys are declared by their method (the `OPTIONS` of a
teacher method in bssl.teachers, of a distillation method in bssl.distill). A preset may give one
method its own values in a `[teacher.<method>]` (or `[distill.<ssl method>]`) table; such a table
beats the flat `[teacher]` keys of the same layer, but a flat key set by a later layer (a child
preset, the user's file, `--set`) beats every earlier table: what the user says last wins.

The result is a plain nested dict with every declared section key filled in, so code reads
`cfg["distill"]["lr"]` without defaults of its own. Every mistake (unknown key, with the closest
known name; wrong type; value out of range) is a UserError, raised before any work starts.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import UserError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class Key:
    """One config key: default, type, allowed values, help.

    `type` is bool, int, float, str or list (then `item` is the element type); `nullable` allows
    None (TOML cannot write None: only the default can be None); `choices` limits str values;
    `min`/`max` bound numbers (and list items); `also` allows values of another type
    (teacher.small_stem is a bool or "auto")."""

    default: Any
    type: type
    help: str = ""
    choices: Optional[Tuple[Any, ...]] = None
    min: Optional[float] = None
    max: Optional[float] = None
    min_exclusive: bool = False
    nullable: bool = False
    item: Optional[type] = None
    also: Optional[Tuple[Any, ...]] = None


def option(default: Any, type_: Optional[type] = None, help: str = "", **kw: Any) -> Key:
    """A Key whose type is that of its default unless given (None defaults need type_)."""
    if type_ is None:
        if default is None:
            raise TypeError("an option with default None needs its type")
        type_ = list if isinstance(default, (list, tuple)) else type(default)
    if default is None:
        kw["nullable"] = True
    if isinstance(default, tuple):
        default = list(default)
    return Key(default, type_, help, **kw)


def defaults(options: Dict[str, Key]) -> Dict[str, Any]:
    return {name: copy.deepcopy(k.default) for name, k in options.items()}


# ---------------------------------------------------------------- the sections and their keys

RUN = {
    "seed": option(0, help="seed of every random choice (data order, init, augmentation, splits)", min=0),
    "device": option("auto", help="auto (cuda when present), cpu, cuda or cuda:N"),
}

DATA = {
    "dataset": option("shapes", help="dataset name (bssl.data registry): shapes, digits, imagefolder, cifar10, ..."),
    "root": option("", help="folder of an on-disk dataset (empty for embedded data)", nullable=True),
    "num_train": option(4000, help="images generated for the train split of embedded data", min=1),
    "num_test": option(1000, help="images generated for the held-out split of embedded data", min=1),
    "image_size": option(32, help="side of the square network input in pixels", min=8),
    "num_classes": option(10, help="classes of generated data", min=2),
    "batch_size": option(128, help="batch size of feature extraction", min=1),
    "workers": option("auto", str, help="DataLoader worker processes (0: load in the main process); auto: from the "
                                        "CPU cores per process and the device (bssl.train.loader_workers)",
                      choices=("auto",), also=(int,), min=0),
    "train_subset": option(0, help="train on a seeded per-class subset of this many images of an on-disk "
                                   "dataset (0: all of train)", min=0),
    "holdout_fraction": option(0.1, help="share of train held out (seeded, per class) when a folder has no val/ or test/",
                               min=0.0, max=0.5, min_exclusive=True),
}

OPTIMIZERS = ("sgd", "adam", "adamw", "lars")  # built by bssl.train.optim
PRECISIONS = ("fp32", "bf16", "fp16")  # run by bssl.train.loop

TEACHER = {
    "method": option("mocov2", help="teacher method (bssl.teachers registry)"),
    "arch": option("resnet18", help="FP backbone", choices=("resnet18", "resnet50")),
    "small_stem": option("auto", str, help="3x3 stride-1 stem without max-pool: true, false or auto (<= 64 px)",
                         choices=("auto",), also=(bool,)),
    "epochs": option(10, min=1),
    "batch_size": option(128, help="global batch size: split over torchrun processes and accumulation steps", min=1),
    "accumulate": option(1, help="gradient accumulation steps per optimiser step (per-process batch = "
                                 "batch_size / processes / accumulate)", min=1),
    "precision": option("fp32", help="fp32, bf16 (autocast on CPU and CUDA) or fp16 (CUDA only, with loss scaling)",
                        choices=PRECISIONS),
    "lr": option(0.06, min=0.0),
    "weight_decay": option(5e-4, min=0.0),
    "momentum": option(0.9, min=0.0, max=1.0),
    "optimizer": option("sgd", help="sgd, adam, adamw or lars (weight decay on every parameter; lars excludes "
                                    "biases and BN)", choices=OPTIMIZERS),
    "lars_eta": option(0.001, help="trust coefficient of LARS", min=0.0, min_exclusive=True),
    "grad_clip": option(0.0, help="max gradient norm, 0 = off", min=0.0),
    "channels_last": option("auto", str, help="NHWC memory format for weights and images: true, false or auto "
                                             "(on with bf16/fp16 on CUDA, whose tensor-core convolutions want NHWC; "
                                             "off on CPU)", choices=("auto",), also=(bool,)),
    "warmup_epochs": option(0.0, help="linear warm-up from 1e-4 x lr, then cosine to 0", min=0.0),
    "knn_every": option(5, help="epochs between kNN monitor runs on the held-out split", min=1),
    "knn_k": option(200, min=1),
    "knn_t": option(0.07, min=0.0, min_exclusive=True),
    # view keys shared by every method
    "num_views": option(2, help="global views per image (EnSiam / K-aug: K)", min=2),
    "multicrop_local": option(0, help="extra small crops (multi-crop), 0 = off", min=0),
    "local_size": option(0, help="side of the local crops; 0 = 96/224 of the image size", min=0),
    "crop_min_scale": option(None, float, help="lower bound of the crop area; default: the method's paper value",
                             min=0.0, max=1.0, min_exclusive=True),
    "hue": option(None, float, help="hue jitter; default: the paper's 0.1", min=0.0, max=0.5),
    "blur": option(None, bool, help="Gaussian blur; default: the paper's (on)"),
}

DISTILL = {
    "method": option("bssl", help="distillation method (bssl.distill registry)"),
    "student": option("reactnet-a", help="student architecture (bssl.models)"),
    "width": option(1.0, help="width multiplier of the student", min=0.0, min_exclusive=True),
    "stem": option("auto", help="student stem", choices=("auto", "imagenet", "small")),
    "pad_value": option(1.0, help="padding value of the binary convs: 1 (one-padding, as deployed) or 0", min=0.0, max=1.0),
    "stages": option(2, help="2 = binary activations first, then fully binary; 1 = fully binary throughout",
                     min=1, max=2),
    "epochs_stage1": option(1, min=1),
    "epochs_stage2": option(1, min=1),
    "sync_bn": option("auto", str, help="BatchNorm statistics over the global batch under DDP: true (every BN), "
                                       "false (none) or auto: the heads (g, projectors) always, the student too "
                                       "for the direct SSL baselines, whose losses compare samples (BURN "
                                       "synchronises its heads, not the ReActNet backbone)",
                      choices=("auto",), also=(bool,)),
    "batch_size": option(128, help="global batch size: split over torchrun processes and accumulation steps", min=1),
    "accumulate": option(1, help="gradient accumulation steps per optimiser step (per-process batch = "
                                 "batch_size / processes / accumulate)", min=1),
    "precision": option("fp32", help="fp32, bf16 (autocast on CPU and CUDA) or fp16 (CUDA only, with loss scaling)",
                        choices=PRECISIONS),
    "lr": option(3e-4, help="peak learning rate (0 keeps the weights, e.g. to check a stage-2 start)", min=0.0),
    "warmup_epochs": option(0.0, help="linear warm-up from 1e-4 x lr, then cosine to 0", min=0.0),
    "optimizer": option("adam", help="adam, adamw, sgd or lars (biases and BN get no weight decay)",
                        choices=OPTIMIZERS),
    "weight_decay": option(0.0, min=0.0),
    "momentum": option(0.9, min=0.0, max=1.0),
    "lars_eta": option(0.001, help="trust coefficient of LARS", min=0.0, min_exclusive=True),
    "grad_clip": option(0.0, help="max gradient norm, 0 = off", min=0.0),
    "channels_last": option("auto", str, help="NHWC memory format for weights and images: true, false or auto "
                                             "(on with bf16/fp16 on CUDA, whose tensor-core convolutions want NHWC; "
                                             "off on CPU)", choices=("auto",), also=(bool,)),
    "seed": option(None, int, help="seed of the distillation; default run.seed", min=0),
    "crop_min_scale": option(None, float, help="lower bound of the crop area of the student's views",
                             min=0.0, max=1.0, min_exclusive=True),
    "hue": option(None, float, min=0.0, max=0.5),
    "blur": option(None, bool),
}

EVAL = {
    "protocols": option(["linear", "knn", "svm", "fewshot"], list, item=str,
                        choices=("linear", "knn", "svm", "fewshot", "semisup", "transfer", "rankme")),
    "batch_size": option(None, int, help="feature extraction batch size; default data.batch_size", min=1),
    "cache": option(True, help="cache extracted features"),
    "cache_dir": option("", help="feature cache folder; default inside the eval folder", nullable=True),
    "crop_pct": option(None, float, help="centre-crop share of eval images; default 0.875 at >=128 px, else 1",
                       min=0.0, max=1.0, min_exclusive=True),
    "jobs": option(-1, help="parallel SVM fits (joblib worker processes; -1: all cores)", min=-1),
    "threads": option(0, help="torch threads for feature extraction / fine-tuning (0: torch default)", min=0),
    "linear_epochs": option(100, min=1),
    "linear_lr": option(30.0, min=0.0, min_exclusive=True),
    "linear_batch_size": option(256, min=1),
    "linear_momentum": option(0.9, min=0.0, max=1.0),
    "linear_weight_decay": option(0.0, min=0.0),
    "linear_milestones": option([0.6, 0.8], list, item=float, min=0.0, max=1.0,
                                help="lr x0.1 at these shares of linear_epochs"),
    "linear_norm": option("none", choices=("none", "standardize")),
    "knn_k": option(200, min=1),
    "knn_t": option(0.07, min=0.0, min_exclusive=True),
    "knn_bank_chunk": option(65536, min=1),
    "knn_query_chunk": option(256, min=1),
    "svm_costs": option([0.01, 0.1, 1.0, 10.0], list, item=float, min=0.0, min_exclusive=True),
    "svm_folds": option(3, min=2),
    "svm_default_cost": option(1.0, min=0.0, min_exclusive=True),
    "fewshot_k": option([1, 2, 4, 8, 16, 32, 64, 96], list, item=int, min=1),
    "fewshot_samples": option(5, min=1),
    "fewshot_costs": option(None, list, item=float, min=0.0, min_exclusive=True,
                            help="few-shot cost sweep; default svm_costs"),
    "fewshot_cost_selection": option("test", choices=("test", "full", "cv")),
    "fewshot_max_negatives": option(19000, min=1),
    "semisup_fractions": option([0.01, 0.1], list, item=float, min=0.0, max=1.0, min_exclusive=True),
    "semisup_epochs": option(20, min=1),
    "semisup_lrs": option([0.1, 0.01, 0.001], list, item=float, min=0.0, min_exclusive=True),
    "semisup_head_mults": option([1.0, 10.0, 100.0], list, item=float, min=0.0, min_exclusive=True),
    "semisup_batch_size": option(256, min=1),
    "semisup_milestones": option([0.6, 0.8], list, item=float, min=0.0, max=1.0),
    "semisup_gamma": option(0.2, min=0.0, min_exclusive=True),
    "semisup_weight_decay": option(0.0, min=0.0),
    "semisup_crop_scale": option([0.08, 1.0], list, item=float, min=0.0, max=1.0),
    "transfer_dataset": option("digits"),
    "transfer_root": option("", nullable=True),
    "rankme_samples": option(25600, min=1),
    "transfer_num_train": option(None, int, help="size of a generated transfer train split", min=1),
    "transfer_num_test": option(None, int, help="size of a generated transfer test split", min=1),
    "svm_dataset": option("auto", help="SVM / few-shot data: auto (the run's own data; VOC2007 when voc_root is set; "
                                       "shapes-multilabel for embedded data) or a dataset name"),
    "voc_root": option("", help="folder holding VOCdevkit/VOC2007: SVM and few-shot run the VOC07 protocol there",
                       nullable=True),
    # VOC2007 (5,011 trainval / 4,952 test) fits whole under these, as the published protocol needs
    "svm_max_train": option(10000, help="seeded per-class subsample of the SVM train split (0: all)", min=0),
    "svm_max_test": option(5000, help="seeded per-class subsample of the SVM test split (0: all)", min=0),
}

EXPORT = {
    "formats": option(["bssl", "onnx", "onnx-packed", "tvm"], list, item=str,
                      choices=("onnx", "onnx-packed", "tvm", "lce", "bssl")),
    "tvm_targets": option(["x86-64"], list, item=str),
    "batch": option(1, help="batch size the TVM libraries are built for", min=1),
    "check_samples": option(8, help="random inputs compared with the PyTorch student after each export", min=1),
    "float16": option(False, bool, help="bssl format: store the float parts (FP conv and FC weights, biases, "
                                        "scales, shifts) as float16, converted to float32 at load; binary weights "
                                        "stay bits"),
}

BENCH = {
    "backends": option(["runtime", "torch", "onnxruntime", "onnxruntime-int8", "kernels", "tvm", "lce"], list, item=str),
    "warmup": option(5, min=0),
    "runs": option(30, min=1),
    "threads": option(1, min=1),
    "input_size": option(224, min=8),
    "batch": option(8, help="larger batch for throughput", min=1),
    "budget_s": option(60.0, help="per batch size: stop timing a slow backend after this many seconds",
                       min=0.0, min_exclusive=True),
    "rpc_target": option("aarch64"),
    "rpc_timeout_s": option(10.0, min=0.0, min_exclusive=True),
    "scaling_sizes": option([32, 64, 96, 128, 160, 224], list, item=int, min=8),
    "scaling_widths": option([0.25, 0.5, 0.75, 1.0], list, item=float, min=0.0, min_exclusive=True),
    "scaling_backends": option(["kernels", "torch"], list, item=str),
}

PRESET = {"name": option("", help="the preset (or file stem) the configuration came from")}

SECTIONS: Dict[str, Dict[str, Key]] = {
    "run": RUN, "data": DATA, "teacher": TEACHER, "distill": DISTILL, "eval": EVAL, "export": EXPORT,
    "bench": BENCH, "preset": PRESET,
}


def _extension_keys() -> Dict[str, Dict[str, Key]]:
    """Keys that methods declare themselves, and the [section.<name>] tables each section allows."""
    from bssl.distill import METHODS as DISTILL_METHODS
    from bssl.teachers import METHODS as TEACHER_METHODS

    teacher_opts = {name: TEACHER_METHODS.get(name).option_keys() for name in TEACHER_METHODS.names()}
    distill_opts = {name: DISTILL_METHODS.get(name).OPTIONS for name in DISTILL_METHODS.names()}
    return {"teacher": teacher_opts, "distill": distill_opts}


# ---------------------------------------------------------------- layers and precedence

Sources = Dict[str, str]  # dotted key -> where its value came from


def preset_names() -> List[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise UserError(f"preset file {path} does not exist; pass a preset name ({', '.join(preset_names())}) "
                            "or an existing .toml file")
        return path
    path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise UserError(f"unknown preset {name_or_path!r}; known: {', '.join(preset_names())} (or pass a .toml file)")
    return path


def preset_layers(name_or_path: str, _seen: Optional[set] = None) -> List[Tuple[str, Dict[str, Any]]]:
    """The (label, table) layers of a preset and its `inherit` chain, parent first."""
    path = _preset_path(name_or_path)
    seen = set() if _seen is None else _seen
    if path.resolve() in seen:
        raise UserError(f"preset {path} inherits itself (inherit chain loops); fix its `inherit` line")
    seen.add(path.resolve())
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"preset file {path} is not valid TOML: {exc}") from None
    base = table.pop("inherit", None)
    label = f"preset {path.stem}" if path.parent == PRESET_DIR else f"file {path}"
    parents = preset_layers(str(base), seen) if base else []
    return parents + [(label, table)]


def apply_layer(cfg: Dict[str, Any], layer: Dict[str, Any], label: str,
                sources: Optional[Sources] = None) -> Dict[str, Any]:
    """cfg with `layer` over it. A flat key of the layer also drops that key from the method tables of
    earlier layers (unless this layer's own table sets it), so the later layer wins everywhere."""
    out = copy.deepcopy(cfg)
    sources = {} if sources is None else sources
    for section, body in layer.items():
        if not isinstance(body, dict):
            raise UserError(f"{label}: top-level key {section!r} is not a section; known sections: "
                            f"{', '.join(k for k in SECTIONS if k != 'preset')}")
        target = out.setdefault(section, {})
        for key, value in body.items():
            if isinstance(value, dict):
                table = target.setdefault(key, {})
                if not isinstance(table, dict):
                    raise UserError(f"{label}: {section}.{key} is a value elsewhere, not a table")
                for k, v in value.items():
                    table[k] = copy.deepcopy(v)
                    sources[f"{section}.{key}.{k}"] = label
                continue
            target[key] = copy.deepcopy(value)
            sources[f"{section}.{key}"] = label
            for name, table in target.items():
                if isinstance(table, dict) and key in table and key not in (body.get(name) or {}):
                    del table[key]
                    sources.pop(f"{section}.{name}.{key}", None)
    return out


def parse_overrides(overrides: Iterable[str]) -> Dict[str, Any]:
    """`section.key=value` (or `section.method.key=value`) as one layer; values parse as JSON when
    they can (numbers, lists, booleans), else stay strings."""
    layer: Dict[str, Any] = {}
    for item in overrides or ():
        if "=" not in item:
            raise UserError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = [k.strip() for k in dotted.strip().split(".")]
        if len(keys) < 2 or not all(keys):
            raise UserError(f"override {item!r} must look like section.key=value (e.g. distill.lr=0.001)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = layer
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {k!r} is set as a value by another override")
        node[keys[-1]] = value
    return layer


# ---------------------------------------------------------------- validation

def _where(dotted: str, sources: Sources) -> str:
    src = sources.get(dotted)
    return f" (from {src})" if src else ""


def _suggest(name: str, known: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""


def as_bool(value) -> Optional[bool]:
    """A config flag as bool (true/false in any case from --set or TOML); None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _coerce_scalar(value: Any, kind: type) -> Any:
    """value as `kind`, or raise ValueError with the reason."""
    if kind is bool:
        flag = as_bool(value)
        if flag is None:
            raise ValueError("must be true or false")
        return flag
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ValueError("must be a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    raise TypeError(f"unsupported config type {kind}")


def _check_range(v: Any, key: Key) -> None:
    if key.min is not None and (v < key.min or (key.min_exclusive and v == key.min)):
        raise ValueError(f"must be {'>' if key.min_exclusive else '>='} {key.min:g}")
    if key.max is not None and v > key.max:
        raise ValueError(f"must be <= {key.max:g}")


def coerce(value: Any, key: Key) -> Any:
    """The value checked and converted to the key's type; ValueError says what is wrong."""
    if value is None:
        if key.nullable:
            return None
        raise ValueError("must be set")
    if key.also:
        for kind in key.also:
            try:
                v = _coerce_scalar(value, kind)
            except ValueError:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                _check_range(v, key)
            return v
    if key.type is list:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of {key.item.__name__ if key.item else 'values'}")
        out = []
        for item in value:
            v = _coerce_scalar(item, key.item) if key.item else item
            if key.choices is not None and v not in key.choices:
                raise ValueError(f"has {v!r}; allowed: {', '.join(map(str, key.choices))}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                _check_range(v, key)
            out.append(v)
        return out
    v = _coerce_scalar(value, key.type)
    if key.choices is not None and v not in key.choices:
        extra = " or " + " / ".join(t.__name__ for t in key.also) if key.also else ""
        raise ValueError(f"must be one of {', '.join(map(repr, key.choices))}{extra}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        _check_range(v, key)
    return v


def _check_keys(values: Dict[str, Any], keys: Dict[str, Key], prefix: str, sources: Sources,
                fill: bool) -> Dict[str, Any]:
    out = {}
    for name, value in values.items():
        dotted = f"{prefix}.{name}"
        if name not in keys:
            raise UserError(f"unknown config key {dotted}{_where(dotted, sources)}{_suggest(name, keys, prefix)} "
                            f"(`bssl config keys {prefix.split('.')[0]}` lists them)")
        try:
            out[name] = coerce(value, keys[name])
        except ValueError as exc:
            raise UserError(f"config {dotted} = {value!r}{_where(dotted, sources)} {exc}") from None
    if fill:
        for name, key in keys.items():
            out.setdefault(name, copy.deepcopy(key.default))
    return out


def _method_tables(section: str, body: Dict[str, Any], common: Dict[str, Key], allowed_tables: Dict[str, Dict[str, Key]],
                   sources: Sources) -> Dict[str, Any]:
    out = {}
    for name, table in body.items():
        if not isinstance(table, dict):
            continue
        dotted = f"{section}.{name}"
        if name not in allowed_tables:
            raise UserError(f"unknown config table [{dotted}]{_where(dotted + '.' + next(iter(table), ''), sources)}"
                            f"{_suggest(name, allowed_tables)}; tables here are named after a method: "
                            f"{', '.join(sorted(allowed_tables))}")
        out[name] = _check_keys(table, {**common, **allowed_tables[name]}, dotted, sources, fill=False)
    return out


def validate(cfg: Dict[str, Any], sources: Optional[Sources] = None) -> Dict[str, Any]:
    """The complete, typed configuration, or one UserError naming the key, its source and the fix."""
    sources = sources or {}
    ext = _extension_keys()
    out: Dict[str, Any] = {}
    for section, body in cfg.items():
        if section not in SECTIONS:
            raise UserError(f"unknown config section [{section}]{_suggest(section, SECTIONS)}; "
                            f"sections: {', '.join(k for k in SECTIONS if k != 'preset')}")
        if not isinstance(body, dict):
            raise UserError(f"config [{section}] must be a table of keys, not {body!r}")
    for section, keys in SECTIONS.items():
        body = dict(cfg.get(section, {}))
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        flat = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if section == "teacher":
            # [teacher] holds the trainer's keys and any method's options (presets tune several methods)
            method_keys = _union(ext["teacher"], section)
            # not filled in: a method's own defaults (EnSiam's 4 views) sit between these defaults and the
            # preset's values, so teacher_settings() resolves them per method
            checked = _check_keys(flat, {**keys, **method_keys}, section, sources, fill=False)
            checked.setdefault("method", keys["method"].default)
            checked.update(_method_tables(section, tables, keys, ext["teacher"], sources))
        elif section == "distill":
            method_keys = _union(ext["distill"], section)
            checked = _check_keys(flat, {**keys, **method_keys}, section, sources, fill=True)
            # [distill.<ssl method>]: options of the SSL method a direct-SSL baseline runs on the student
            ssl_tables = {m.ssl_name: ext["teacher"][m.ssl_name] for m in _distill_classes() if getattr(m, "ssl_name", "")}
            checked.update(_method_tables(section, tables, {}, ssl_tables, sources))
        else:
            if tables:
                name = next(iter(tables))
                raise UserError(f"config [{section}.{name}]: section {section} has no tables; "
                                f"set its keys directly ({section}.key = value)")
            checked = _check_keys(flat, keys, section, sources, fill=True)
        out[section] = checked
    _check_methods(out, sources)
    return out


def _distill_classes():
    from bssl.distill import METHODS

    return [METHODS.get(n) for n in METHODS.names()]


def _union(per_method: Dict[str, Dict[str, Key]], section: str) -> Dict[str, Key]:
    """All methods' option keys of a section; a key declared twice must agree on its type."""
    out: Dict[str, Key] = {}
    for method, opts in per_method.items():
        for name, key in opts.items():
            if name in out and (out[name].type, out[name].nullable) != (key.type, key.nullable) and not out[name].nullable:
                raise TypeError(f"{section}.{name} is declared with two types ({out[name].type} vs {key.type})")
            out.setdefault(name, key)
    return out


def _check_methods(cfg: Dict[str, Any], sources: Sources) -> None:
    """Names that pick a registered thing, and each method's own cross-key checks."""
    from bssl.distill import METHODS as DISTILL_METHODS
    from bssl.teachers import METHODS as TEACHER_METHODS

    for section, registry in (("teacher", TEACHER_METHODS), ("distill", DISTILL_METHODS)):
        name = cfg[section]["method"]
        if name not in registry.names():
            dotted = f"{section}.method"
            raise UserError(f"config {dotted} = {name!r}{_where(dotted, sources)} is not a known method"
                            f"{_suggest(name, registry.names())}; known: {', '.join(registry.names())}")
    teacher_cls = TEACHER_METHODS.get(cfg["teacher"]["method"])
    teacher_cls.check_config(teacher_settings(cfg))


def teacher_settings(cfg: Dict[str, Any], method: Optional[str] = None) -> Dict[str, Any]:
    """The chosen teacher method's effective settings: trainer keys and its declared options, from its
    defaults < [teacher] < [teacher.<method>]."""
    from bssl.teachers import METHODS

    section = cfg.get("teacher", {})
    name = method or section.get("method", TEACHER["method"].default)
    cls = METHODS.get(name)
    flat = {k: v for k, v in section.items() if not isinstance(v, dict)}
    table = section.get(name) if isinstance(section.get(name), dict) else {}
    out = {**defaults(TEACHER), **cls.defaults(), **flat, **table, "method": name}
    return out


# ---------------------------------------------------------------- entry points

def resolve(preset: str, overrides: Sequence[str] = (), flags: Optional[Dict[str, Any]] = None
            ) -> Tuple[Dict[str, Any], Sources]:
    """Preset chain < --set overrides < the command's flags (a {'section.key': value} dict, None values
    skipped), validated. Returns the configuration and where each explicitly set value came from."""
    sources: Sources = {}
    cfg: Dict[str, Any] = {}
    layers = preset_layers(preset)
    for label, layer in layers:
        cfg = apply_layer(cfg, layer, label, sources)
    cfg = apply_layer(cfg, parse_overrides(overrides), "--set", sources)
    flag_layer: Dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, key = dotted.split(".", 1)
            flag_layer.setdefault(section, {})[key] = value
    cfg = apply_layer(cfg, flag_layer, "command line", sources)
    cfg.setdefault("preset", {})["name"] = Path(preset).stem
    sources.pop("preset.name", None)
    return validate(cfg, sources), sources


def load_preset(name_or_path: str) -> Dict[str, Any]:
    """A preset by name (smoke, cpu, cifar10, imagenet-bssl, ...) or .toml path, validated and complete."""
    return resolve(name_or_path)[0]


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """cfg with `section.key=value` overrides applied (they beat every preset table) and validated."""
    layer = parse_overrides(overrides)
    return validate(apply_layer(cfg, layer, "--set"), {k: "--set" for k in _dotted(layer)})


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """`over` as a layer over `base` (same precedence as presets), not validated."""
    return apply_layer(base, over, "merge")


def _dotted(tree: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for k, v in tree.items():
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


# ---------------------------------------------------------------- `bssl config show`

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def to_toml(cfg: Dict[str, Any], sources: Optional[Sources] = None, defaults_marked: bool = True) -> str:
    """The configuration as TOML, each line commented with where its value came from. Keys whose value
    is None (meaning "the method's/paper's default") are written as comments, since TOML has no null."""
    sources = sources or {}
    lines: List[str] = []
    known = describe_keys()

    def emit(prefix: str, body: Dict[str, Any]) -> None:
        for k, v in body.items():
            if isinstance(v, dict):
                continue
            dotted = f"{prefix}.{k}"
            origin = sources.get(dotted, "default" if defaults_marked else "")
            if v is None:
                key = known.get(prefix.split(".")[0], {}).get(k)
                lines.append(f"# {k} = (unset{': ' + key.help if key is not None and key.help else ''})")
            else:
                lines.append(f"{k} = {_toml_value(v)}" + (f"  # {origin}" if origin else ""))

    for section, body in cfg.items():
        if section == "preset":
            continue
        lines.append(f"[{section}]")
        emit(section, body)
        lines.append("")
        for name, table in body.items():
            if isinstance(table, dict) and table:
                lines.append(f"[{section}.{name}]")
                emit(f"{section}.{name}", table)
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def describe_keys() -> Dict[str, Dict[str, Key]]:
    """Every declared key by section, method options included (for docs and `bssl config keys`)."""
    ext = _extension_keys()
    out = {s: dict(k) for s, k in SECTIONS.items() if s != "preset"}
    for section in ("teacher", "distill"):
        for method, opts in ext[section].items():
            for name, key in opts.items():
                out[section].setdefault(name, key)
    return out


__all__ = ["Key", "option", "defaults", "SECTIONS", "resolve", "validate", "load_preset", "apply_overrides",
           "merge", "apply_layer", "parse_overrides", "preset_layers", "preset_names", "teacher_settings",
           "to_toml", "as_bool", "coerce", "describe_keys"]
