"""Classifiers: a student whose pseudo-class head is replaced by a trained task head, with its class names.

The path from representation to a deployed classifier::

    bssl eval linear --checkpoint student.pt --dataset imagefolder --data-root photos/ --save clf/
    bssl export --checkpoint clf/classifier.pt --format onnx
    bssl predict clf/exports/model.onnx photo.jpg
    bssl eval accuracy --checkpoint clf/exports/model.onnx --compare clf/classifier.pt ...

A classifier checkpoint (kind ``"classifier"``, docs/classifier.md) is a student checkpoint
(``spec``, ``state_dict``, ``stage``: the student, frozen after a linear probe or fine-tuned by
semisup) whose ``classifier`` is an ``nn.Linear`` with one output per class, plus ``classes``,
``preprocess`` (input size, crop share, mean/std), ``accuracy`` (held-out top-1/top-5 measured
when it was trained, with the data it was measured on) and ``training`` (protocol and settings).
A linear probe trained on standardised features has the standardisation folded into the head.

`load_predictor(path)` runs any classifier form the same way (PyTorch checkpoint, exported ONNX,
model.bssl through bssl.runtime): `predict` and `evaluate_accuracy` build on it.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .errors import UserError

KIND = "classifier"
FILE_NAME = "classifier.pt"
SUMMARY_NAME = "classifier.json"
SAVE_PROTOCOLS = ("linear", "semisup")
META_PREFIX = "bssl."  # ONNX metadata_props keys: bssl.classes, bssl.preprocess, bssl.accuracy, bssl.kind
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what bssl.eval.features.eval_transform normalises with
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_CLASSES_HINT = ("it has no class names (a plain student, whose head scores BSSL's pseudo-classes); train a "
                   "classifier with `bssl eval linear --checkpoint STUDENT --dataset imagefolder --data-root DIR "
                   "--save OUT` and use OUT/classifier.pt or its export")


# --------------------------------------------------------------------------------------------- the head


def fold_standardization(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                         std: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one linear layer equal to `W ((f - mean) / std) + b` on raw features f.

    W' = W / std (per input column), b' = b - W' mean; computed in float64, rounded to float32 once.
    """
    w, b = weight.detach().cpu().double(), bias.detach().cpu().double()
    m, s = mean.detach().cpu().double().reshape(-1), std.detach().cpu().double().reshape(-1)
    if w.shape[1] != m.numel() or m.shape != s.shape:
        raise ValueError(f"standardisation of {m.numel()} features does not fit a head over {w.shape[1]} features")
    w2 = w / s[None, :]
    return w2.float(), (b - w2 @ m).float()


def folded_head(fc: nn.Linear, stats: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> nn.Linear:
    """A copy of a probe's FC layer on CPU with its feature standardisation (mean, std) folded in (None: as is)."""
    head = nn.Linear(fc.in_features, fc.out_features)
    with torch.no_grad():
        if stats is None:
            head.weight.copy_(fc.weight.detach().cpu())
            head.bias.copy_(fc.bias.detach().cpu())
        else:
            w, b = fold_standardization(fc.weight, fc.bias, stats[0], stats[1])
            head.weight.copy_(w)
            head.bias.copy_(b)
    return head


def _student_of(module: nn.Module) -> nn.Module:
    """The bssl student behind an extractor module (bssl.eval wraps students to return their features)."""
    student = getattr(module, "model", module)
    if not (isinstance(getattr(student, "spec", None), dict) and hasattr(student, "features")
            and isinstance(getattr(student, "classifier", None), nn.Linear)):
        raise UserError("--save writes a classifier made of a bssl student and the trained head; this checkpoint is "
                        f"not a bssl student ({type(student).__name__}); evaluate the student written by `bssl distill`")
    return student


def make_classifier(student: nn.Module, head: nn.Linear, classes: Sequence[str],
                    info: Optional[Dict[str, Any]] = None) -> nn.Module:
    """A copy of `student` (CPU, eval mode) whose `.classifier` is `head`; `.classifier_info` holds its metadata."""
    student = _student_of(student)
    if head.in_features != student.classifier.in_features:
        raise UserError(f"the head takes {head.in_features} features, the student gives {student.classifier.in_features}")
    if head.out_features != len(classes):
        raise UserError(f"the head has {head.out_features} outputs for {len(classes)} class names")
    model = copy.deepcopy(student).cpu().eval()
    model.classifier = copy.deepcopy(head).cpu()
    model.spec = {**student.spec, "num_classes": len(classes)}
    model.classifier_info = dict(info or {}, classes=[str(c) for c in classes])
    return model


# --------------------------------------------------------------------------------------------- checkpoint


def _resolved_crop(input_size: int, crop_pct: Optional[float]) -> float:
    return float(crop_pct) if crop_pct is not None else (0.875 if input_size >= 128 else 1.0)


def preprocess_info(input_size: int, crop_pct: Optional[float] = None, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Dict[str, Any]:
    """How images reach the model: bssl.eval.features.eval_transform's resize and centre crop, then (x - mean) / std."""
    crop = _resolved_crop(int(input_size), crop_pct)
    return {"input_size": int(input_size), "crop_pct": crop, "resize": int(round(int(input_size) / crop)),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "layout": "NCHW RGB, pixel / 255"}


def save_classifier(path: os.PathLike | str, model: nn.Module, config: Dict[str, Any], *, force: bool = False) -> Path:
    """Write `model` (from make_classifier) as a classifier checkpoint, atomically, and classifier.json beside it."""
    from .nn import get_stage
    from .utils import save_checkpoint, write_json

    path = Path(path)
    info = getattr(model, "classifier_info", None)
    if not info or not info.get("classes"):
        raise UserError("save_classifier needs a model made by bssl.classifier.make_classifier (it has no class names)")
    if path.exists() and not force:
        raise UserError(f"{path} already holds a classifier; pass --force to replace it")
    stage = get_stage(model)
    state = {"spec": {**model.spec, "stage": stage}, "state_dict": model.state_dict(), "stage": stage,
             "classes": list(info["classes"]), "preprocess": info.get("preprocess") or preprocess_info(
                 int(model.spec["input_size"])),
             "accuracy": info.get("accuracy") or {}, "training": info.get("training") or {}}
    save_checkpoint(path, KIND, state, config)
    summary = {"kind": KIND, "checkpoint": path.name, "model": model.spec.get("name"),
               "num_classes": len(state["classes"]), "classes": state["classes"], "preprocess": state["preprocess"],
               "accuracy": state["accuracy"], "training": state["training"]}
    write_json(path.with_name(SUMMARY_NAME) if path.name == FILE_NAME else path.with_suffix(".json"), summary)
    return path


def load_classifier(path: os.PathLike | str) -> nn.Module:
    """Rebuild a classifier checkpoint: a student with the task head, `.classifier_info` holding classes etc."""
    from .models import student_from_checkpoint
    from .utils import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    if ckpt["bssl_kind"] == "student":
        raise UserError(f"{path}: {NO_CLASSES_HINT}")
    if ckpt["bssl_kind"] != KIND:
        raise UserError(f"checkpoint {path} holds a {ckpt['bssl_kind']!r}, but a classifier checkpoint is needed here "
                        f"(written by `bssl eval linear|semisup --save DIR`)")
    for key in ("classes", "preprocess"):
        if key not in ckpt:
            raise UserError(f"classifier checkpoint {path} lacks the {key!r} entry; save it again with --save")
    model = student_from_checkpoint(ckpt, path, what="classifier", fix="save it again with --save")
    classes = [str(c) for c in ckpt["classes"]]
    if model.classifier.out_features != len(classes):
        raise UserError(f"classifier checkpoint {path} has {model.classifier.out_features} outputs for "
                        f"{len(classes)} class names")
    model.classifier_info = {"classes": classes, "preprocess": dict(ckpt["preprocess"]),
                             "accuracy": dict(ckpt.get("accuracy") or {}), "training": dict(ckpt.get("training") or {})}
    return model.eval()


def checkpoint_kind(path: os.PathLike | str) -> Optional[str]:
    """The bssl kind of a .pt file (None when it is not a readable bssl checkpoint)."""
    try:
        raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (not a torch file, or damaged: the caller reports it)
        return None
    return raw.get("bssl_kind") if isinstance(raw, dict) else None


# --------------------------------------------------------------------------------------------- --save


class ClassifierTarget:
    """Where `bssl eval linear|semisup --save DIR` writes DIR/classifier.pt; checked before any training.

    `protocol` names whose head is kept when both linear and semisup run (None: the one of them that runs)."""

    def __init__(self, folder: os.PathLike | str, force: bool = False, config: Optional[Dict[str, Any]] = None,
                 source: Optional[os.PathLike | str] = None, protocol: Optional[str] = None):
        if protocol is not None and protocol not in SAVE_PROTOCOLS:
            raise UserError(f"a classifier is saved from {' or '.join(SAVE_PROTOCOLS)}, not {protocol!r}")
        self.folder = Path(folder)
        self.path = self.folder / FILE_NAME
        self.force = bool(force)
        self.config = config
        self.source = source  # the checkpoint the classifier was trained from, recorded in `training`
        self.protocol = protocol
        self.saved: Optional[Path] = None
        self.info: Dict[str, Any] = {}  # classes, preprocess, accuracy, training of the saved classifier

    def describe(self) -> str:
        """One line about the saved classifier, for the CLI."""
        acc = self.info.get("accuracy") or {}
        top1 = f", top-1 {100 * acc['top1']:.2f}% on {acc.get('source')}" if acc.get("top1") is not None else ""
        return f"classifier: {self.saved} ({len(self.info.get('classes') or [])} classes, head from {self.protocol}{top1})"

    def wants(self, protocol: str) -> bool:
        """Whether the head trained by `protocol` is the one to save."""
        return protocol == self.protocol

    def prepare(self, protocols: Sequence[str], checkpoint: Any = None, config: Optional[Dict[str, Any]] = None) -> None:
        """Before any work: UserError for an existing classifier without --force, no protocol (or two) to take the
        head from, or a checkpoint that is not a bssl student (or classifier); then remember what to save."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"--save {self.folder} is a file; give a folder for classifier.pt")
        if self.path.exists() and not self.force:
            raise UserError(f"{self.folder} already holds a classifier ({self.path}); pass --force to replace it")
        chosen = [p for p in SAVE_PROTOCOLS if p in protocols]
        if self.protocol is None:
            if len(chosen) != 1:
                raise UserError(f"--save keeps the head of one protocol; run exactly one of "
                                f"{' or '.join(SAVE_PROTOCOLS)} with it (got {', '.join(protocols) or 'none'})")
            self.protocol = chosen[0]
        elif self.protocol not in protocols:
            raise UserError(f"the classifier is to come from {self.protocol}, which is not among the protocols run")
        if isinstance(checkpoint, (str, os.PathLike)):
            if Path(checkpoint).suffix.lower() == ".onnx":
                raise UserError("--save needs the PyTorch student checkpoint (the classifier is the student plus the "
                                "trained head); pass the student .pt, then export the classifier")
            kind = checkpoint_kind(checkpoint)
            if kind not in ("student", KIND) and Path(checkpoint).is_file():
                raise UserError(f"--save needs a bssl student checkpoint; {checkpoint} is "
                                f"{'a ' + repr(kind) + ' checkpoint' if kind else 'not a bssl student'} "
                                "(teachers have no binary student to deploy)")
            self.source = self.source or checkpoint
        elif isinstance(checkpoint, nn.Module):
            _student_of(checkpoint)
        if self.config is None:
            self.config = config or {}

    def _write(self, model: nn.Module) -> Path:
        self.saved = save_classifier(self.path, model, self.config or {}, force=self.force)
        self.info = model.classifier_info
        return self.saved

    def _training(self, protocol: str, **extra: Any) -> Dict[str, Any]:
        return {"protocol": protocol, "from_checkpoint": str(self.source) if self.source else None, **extra}

    def _linear_head(self, ctx, train, test, fc: nn.Linear, stats, norm: str, result: Dict[str, Any]
                     ) -> Tuple[nn.Linear, Dict[str, Any]]:
        """The probe's head with the standardisation folded in, checked on the held-out features, and its metadata."""
        if train.multilabel:
            raise UserError(f"--save writes a single-label classifier; {result.get('dataset')} is multi-label")
        if norm not in ("none", "standardize"):
            raise UserError(f"eval.linear_norm={norm} cannot be folded into a linear head; use none or standardize")
        head = folded_head(fc, stats if norm == "standardize" else None)
        with torch.no_grad():  # the folded head on raw held-out features scores what the probe scored
            pred = np.concatenate([head(torch.from_numpy(np.asarray(test.features[i:i + 4096], dtype=np.float32)))
                                   .argmax(1).numpy() for i in range(0, len(test.features), 4096)])
        accuracy = _accuracy_entry(result, "linear", top1=result["value"], top5=result["details"].get("top5"))
        accuracy["folded_head_top1"] = float((pred == np.asarray(test.targets)).mean())
        pre = preprocess_info(ctx.extractor.input_size, ctx.get("crop_pct"))
        d = result["details"]
        training = self._training("linear", norm=norm, folded_standardization=norm == "standardize",
                                  epochs=d.get("epochs"), lr=d.get("lr"), n_train=d.get("n_train"),
                                  backbone="frozen")
        return head, {"preprocess": pre, "accuracy": accuracy, "training": training}

    def from_linear(self, ctx, train, test, fc: nn.Linear, stats, norm: str, result: Dict[str, Any]) -> Path:
        """Save the student frozen with the probe's head, standardisation folded in; check the fold on test features."""
        head, info = self._linear_head(ctx, train, test, fc, stats, norm, result)
        return self._write(make_classifier(ctx.extractor.module, head, train.classes, info))

    def from_semisup(self, ctx, classes: Sequence[str], kept: Optional[tuple], result: Dict[str, Any]) -> Path:
        """Save the fine-tuned student of the best sweep run on the first label fraction with its head.

        `kept`: (semisup's fine-tuned `_Classifier`, its run entry, label fraction, number of labels) or None."""
        if kept is None:
            raise UserError("every semisup run diverged, so there is no classifier to save; lower eval.semisup_lrs")
        finetuned, run, fraction, n_labels = kept
        student = getattr(finetuned, "backbone", finetuned)
        accuracy = _accuracy_entry(result, "semisup", top1=run["top1"], top5=run.get("top5"))
        pre = preprocess_info(ctx.extractor.input_size, ctx.get("crop_pct"))
        training = self._training("semisup", fraction=float(fraction), n_labels=int(n_labels), lr=run.get("lr"),
                                  head_mult=run.get("head_mult"), epochs=result["details"].get("epochs"),
                                  backbone="fine-tuned", selection=result["details"].get("selection"))
        model = make_classifier(student, finetuned.head, classes,
                                {"preprocess": pre, "accuracy": accuracy, "training": training})
        return self._write(model)


class FloatClassifierTarget(ClassifierTarget):
    """The FP reference of a deployed binary classifier: a teacher's frozen backbone with a linear probe's head trained
    by the same protocol on the same features, written as ONNX FP32 (`model.onnx`, the file one would quantise to
    int8 and ship instead), with the same class names and metadata as a student classifier's export."""

    def __init__(self, folder: os.PathLike | str, config: Optional[Dict[str, Any]] = None,
                 source: Optional[os.PathLike | str] = None):
        super().__init__(folder, force=True, config=config, source=source, protocol="linear")
        self.path = self.folder / "model.onnx"
        self.export: Dict[str, Any] = {}

    def prepare(self, protocols: Sequence[str], checkpoint: Any = None, config: Optional[Dict[str, Any]] = None) -> None:
        if "linear" not in protocols:
            raise UserError("the FP reference classifier comes from the linear probe, which is not among the protocols")
        if isinstance(checkpoint, (str, os.PathLike)):
            self.source = self.source or checkpoint
        if self.config is None:
            self.config = config or {}

    def from_linear(self, ctx, train, test, fc: nn.Linear, stats, norm: str, result: Dict[str, Any]) -> Path:
        from .export.onnx_export import export_float_classifier

        head, info = self._linear_head(ctx, train, test, fc, stats, norm, result)
        info["classes"] = [str(c) for c in train.classes]
        self.export = export_float_classifier(ctx.extractor.module, head, self.path, ctx.extractor.input_size, info)
        self.saved, self.info = self.path, info
        return self.path


def _accuracy_entry(result: Dict[str, Any], protocol: str, top1: float, top5: Optional[float]) -> Dict[str, Any]:
    return {"top1": float(top1), "top5": None if top5 is None else float(top5), "measured_by": protocol,
            "runtime": "pytorch", "dataset": result.get("dataset"), "data_root": result.get("data_root"),
            "test_split": result.get("test_split"), "n_test": result.get("n_test"), "source": result.get("source")}


# --------------------------------------------------------------------------------------------- export metadata


def classifier_info_of(model: Any) -> Optional[Dict[str, Any]]:
    """The classifier metadata a model carries (None for a plain student)."""
    info = getattr(model, "classifier_info", None)
    return info if isinstance(info, dict) and info.get("classes") else None


def metadata_props(info: Dict[str, Any]) -> Dict[str, str]:
    """String key/values for ONNX metadata_props (and other string tables): bssl.kind, classes, preprocess, accuracy."""
    return {f"{META_PREFIX}kind": KIND, f"{META_PREFIX}classes": json.dumps(list(info["classes"])),
            f"{META_PREFIX}preprocess": json.dumps(info.get("preprocess") or {}),
            f"{META_PREFIX}accuracy": json.dumps(info.get("accuracy") or {})}


def info_from_props(props: Dict[str, str]) -> Optional[Dict[str, Any]]:
    if f"{META_PREFIX}classes" not in props:
        return None
    try:
        return {"classes": [str(c) for c in json.loads(props[f"{META_PREFIX}classes"])],
                "preprocess": json.loads(props.get(f"{META_PREFIX}preprocess") or "{}"),
                "accuracy": json.loads(props.get(f"{META_PREFIX}accuracy") or "{}")}
    except (ValueError, TypeError):
        return None


def sidecar_path(model_path: os.PathLike | str) -> Path:
    """`model.tflite` -> `model.tflite.json`: classes and preprocessing of a format without a metadata table."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def write_sidecar(model_path: os.PathLike | str, info: Dict[str, Any], fmt: str) -> Path:
    from .utils import write_json

    path = sidecar_path(model_path)
    write_json(path, {"kind": KIND, "format": fmt, "model": Path(model_path).name, "classes": list(info["classes"]),
                      "preprocess": info.get("preprocess") or {}, "accuracy": info.get("accuracy") or {}})
    return path


# --------------------------------------------------------------------------------------------- running a classifier


@dataclass
class Predictor:
    """A classifier in any deployed form: `run(x)` maps normalised (N, 3, S, S) float32 to logits (N, classes)."""

    path: Path
    runtime: str                      # "pytorch", "onnxruntime" or "bssl-runtime"
    classes: Optional[List[str]]
    preprocess: Dict[str, Any]
    run: Callable[[np.ndarray], np.ndarray]
    fixed_batch: Optional[int] = None
    accuracy: Dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(self.preprocess["input_size"])

    def require_classes(self) -> List[str]:
        if not self.classes:
            raise UserError(f"{self.path}: {NO_CLASSES_HINT}")
        return self.classes

    def logits(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        size = self.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise UserError(f"{self.path} was built for (N, 3, {size}, {size}) input, got {tuple(x.shape)}")
        step = self.fixed_batch or batch
        outs = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, axis=0)])
            outs.append(np.asarray(self.run(chunk), dtype=np.float32).reshape(len(chunk), -1)[:n])
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes or [])), np.float32)


def _torch_predictor(path: Path) -> Predictor:
    model = load_classifier(path)
    info = model.classifier_info

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return Predictor(path, "pytorch", info["classes"], info["preprocess"], run, accuracy=info.get("accuracy") or {})


def _onnx_predictor(path: Path) -> Predictor:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        hint = "; the packed export (ai.bssl ops) runs through TVM only, use the standard .onnx" if "ai.bssl" in str(exc) else ""
        raise UserError(f"onnxruntime cannot load {path}: {msg}{hint}") from None
    inp = sess.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
        raise UserError(f"{path} takes input of shape {shape}; a bssl classifier takes (N, 3, S, S) images")
    outputs = [o.name for o in sess.get_outputs()]
    out = "logits" if "logits" in outputs else outputs[0]
    info = info_from_props(dict(sess.get_modelmeta().custom_metadata_map or {}))
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    pre = dict((info or {}).get("preprocess") or {})
    if pre.get("input_size") not in (None, shape[2]):
        raise UserError(f"{path} records input size {pre['input_size']} but its graph takes {shape[2]} px")
    pre = pre or preprocess_info(int(shape[2]))
    pre.setdefault("input_size", int(shape[2]))

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([out], {inp.name: x})[0]

    return Predictor(path, "onnxruntime", (info or {}).get("classes"), pre, run, fixed,
                     (info or {}).get("accuracy") or {})


def _bssl_predictor(path: Path) -> Predictor:
    try:
        from . import runtime
    except ImportError as exc:  # pragma: no cover  (the binding ships with bssl)
        raise UserError(f"the native runtime is not available to run {path}: {exc}") from None
    if not runtime.available():
        raise UserError(f"the native runtime library is not built, so {path} cannot run here; build the kernels "
                        "(pip install -e .) or use the ONNX export")
    model = runtime.load(path)
    c, h, w = model.input_shape
    if c != 3 or h != w:
        raise UserError(f"{path} takes ({c}, {h}, {w}) input; a bssl classifier takes (3, S, S) images")
    names = list(model.class_names)
    classes = names if names and all(names) else None
    side = sidecar_path(path)
    extra = json.loads(side.read_text()) if side.is_file() else {}
    pre = dict(extra.get("preprocess") or {}) or preprocess_info(h, None, model.mean.tolist(), model.std.tolist())
    return Predictor(path, "bssl-runtime", classes, pre, lambda x: model.run(x)[0], accuracy=extra.get("accuracy") or {})


def load_predictor(path: os.PathLike | str) -> Predictor:
    """A classifier checkpoint (.pt), an exported .onnx or a model.bssl, ready to run on normalised images."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model {path} does not exist; pass a classifier .pt, an exported .onnx or a model.bssl")
    if path.is_dir():
        raise UserError(f"model {path} is a folder; pass the classifier.pt, model.onnx or model.bssl file inside it")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_predictor(path)
    if suffix == ".bssl":
        return _bssl_predictor(path)
    if suffix in (".tflite", ".so"):
        raise UserError(f"{path}: bssl predict runs classifier .pt checkpoints, .onnx and model.bssl files; "
                        f"run {suffix} files on their own runtime (class names: {sidecar_path(path).name} or model.json)")
    return _torch_predictor(path)


def image_transform(pre: Dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (3, H, W) -> the model's input: eval_transform's resize + centre crop, then the model's mean/std."""
    from .eval.features import eval_transform

    size = int(pre["input_size"])
    base = eval_transform(size, pre.get("crop_pct"))  # normalises with the ImageNet mean/std
    mean = torch.tensor(pre.get("mean") or IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.get("std") or IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    if torch.equal(mean, torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) and torch.equal(std, torch.tensor(IMAGENET_STD).view(3, 1, 1)):
        return base
    from torchvision.transforms import v2

    steps = list(base.transforms[:-1]) + [v2.Normalize(mean.flatten().tolist(), std.flatten().tolist())]
    return v2.Compose(steps)


def image_files(inputs: Sequence[os.PathLike | str]) -> List[Path]:
    """Image files named on the command line; folders expand to the image files inside them (sorted, recursive)."""
    from .data.imagefolder import is_image_file

    out: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f.name)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise UserError(f"folder {p} holds no image files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"image {p} does not exist")
    if not out:
        raise UserError("no images given")
    return out


def load_images(paths: Sequence[Path], pre: Dict[str, Any]) -> torch.Tensor:
    from .data.imagefolder import read_rgb

    transform = image_transform(pre)
    return torch.stack([transform(read_rgb(str(p))) for p in paths])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(model: os.PathLike | str | Predictor, images: Sequence[os.PathLike | str], top: int = 5,
            input_size: Optional[int] = None, batch: int = 32) -> List[Dict[str, Any]]:
    """Top-`top` classes with probabilities per image: [{"image", "top": [{"class", "index", "probability"}]}]."""
    pred = model if isinstance(model, Predictor) else load_predictor(model)
    classes = pred.require_classes()
    if input_size is not None and int(input_size) != pred.input_size:
        raise UserError(f"{pred.path} was built for {pred.input_size} px input, not {input_size} px; "
                        f"drop --input-size or export the classifier at that size")
    if top < 1:
        raise UserError(f"--top must be >= 1, got {top}")
    files = image_files(images)
    out: List[Dict[str, Any]] = []
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        probs = softmax(pred.logits(load_images(chunk, pred.preprocess).numpy()))
        if probs.shape[1] != len(classes):
            raise UserError(f"{pred.path} gives {probs.shape[1]} scores for {len(classes)} class names")
        for path, p in zip(chunk, probs):
            order = np.argsort(-p, kind="stable")[:top]
            out.append({"image": str(path), "top": [{"class": classes[j], "index": int(j), "probability": float(p[j])}
                                                    for j in order]})
    return out


# --------------------------------------------------------------------------------------------- accuracy of a deployed file


def _heldout_text(split: str, ds) -> str:
    held = getattr(ds, "heldout", None) or {}
    if held.get("source") == "folder":
        return f"{held['split']}/"
    if held.get("source") == "seeded":
        return f"held-out {held.get('fraction', 0):.0%} of train/ (seed {held.get('seed')})"
    return str(held.get("split") or split)


def _check_classes(pred: Predictor, ds_classes: Sequence[str], dataset: str) -> List[str]:
    classes = pred.require_classes()
    ds_classes = [str(c) for c in ds_classes]
    if len(classes) != len(ds_classes):
        raise UserError(f"{pred.path} classifies {len(classes)} classes but dataset {dataset} has {len(ds_classes)}; "
                        "evaluate it on the dataset it was trained on (--dataset/--data-root)")
    if classes != ds_classes:
        diff = next(i for i, (a, b) in enumerate(zip(classes, ds_classes)) if a != b)
        raise UserError(f"{pred.path} class {diff} is {classes[diff]!r} but dataset {dataset} has {ds_classes[diff]!r} "
                        "there; the class names must match the dataset's class folders")
    return classes


def evaluate_accuracy(model: os.PathLike | str, cfg: Dict[str, Any], out_dir: os.PathLike | str, *,
                      compare: Optional[os.PathLike | str] = None, dataset: Optional[str] = None,
                      data_root: Optional[str] = None, report_path: Optional[os.PathLike | str] = None
                      ) -> Dict[str, dict]:
    """Top-1/top-5 of a classifier (exported .onnx, model.bssl or classifier .pt) on the held-out split of the run's
    dataset (or `dataset`), computed from the file's own logits. `compare`: a second classifier (e.g. the PyTorch
    checkpoint the export came from) measured on the same images. The accuracy recorded at training time, carried
    by the classifier's metadata, is reported beside. Writes eval.json / eval.md like `bssl eval`."""
    from torch.utils.data import DataLoader

    from .config import validate
    from .eval import EvalContext, eval_splits, format_table
    from .eval.metrics import topk_accuracy
    from .train import loader_workers
    from .utils import atomic_path, code_version, write_json

    cfg = validate(cfg)  # a partial dict from Python gets the declared defaults
    pred = load_predictor(model)
    pred.require_classes()
    other = load_predictor(compare) if compare is not None else None
    if other is not None:
        other.require_classes()
    out_dir = Path(out_dir)
    ctx = EvalContext(None, cfg, out_dir, dataset=dataset, data_root=data_root)
    name, root = ctx.primary()
    _, split = eval_splits(name)
    ds, _ = ctx.build(name, split, root)
    if getattr(ds, "multilabel", False):
        raise UserError(f"accuracy needs a single-label dataset; {name} is multi-label")
    _check_classes(pred, ds.classes, name)
    if other is not None:
        _check_classes(other, ds.classes, name)
        if other.input_size != pred.input_size or other.preprocess.get("crop_pct") != pred.preprocess.get("crop_pct"):
            raise UserError(f"{compare} preprocesses images differently ({other.input_size} px) from {model} "
                            f"({pred.input_size} px); compare a classifier with its own export")
    ds.transform = image_transform(pred.preprocess)
    batch = int(cfg["eval"]["batch_size"] or cfg["data"]["batch_size"])
    scores, others, labels = [], [], []
    for x, y in DataLoader(ds, batch_size=batch, shuffle=False, num_workers=loader_workers(cfg["data"]["workers"], "cpu")):
        arr = x.numpy()
        scores.append(pred.logits(arr))
        if other is not None:
            others.append(other.logits(arr))
        labels.append(np.asarray(y))
    if not labels:
        raise UserError(f"dataset {name} has no held-out images")
    s, lab = np.concatenate(scores), np.concatenate(labels)
    n = len(lab)
    where = name + (f" {root}" if root else "")
    resolved = str((getattr(ds, "heldout", None) or {}).get("split") or split)  # "heldout" -> val, test, ...
    src = {"dataset": name, "data_root": str(root) if root else None, "train_split": None, "test_split": resolved,
           "n_train": None, "n_test": n, "source": f"{where}, {_heldout_text(split, ds)} ({n:,} images)"}
    details: Dict[str, Any] = {"model": str(model), "runtime": pred.runtime, "top5": topk_accuracy(s, lab, 5),
                               "trained": pred.accuracy or None}
    if other is not None:
        o = np.concatenate(others)
        details["compare"] = {"model": str(compare), "runtime": other.runtime, "top1": topk_accuracy(o, lab, 1),
                              "top5": topk_accuracy(o, lab, 5),
                              "top1_agreement": float((o.argmax(1) == s.argmax(1)).mean())}
    results = {"accuracy": {"metric": "top1", "value": topk_accuracy(s, lab, 1), "details": details, **src}}
    report = {"model": Path(model).name, "runtime": pred.runtime, "input_size": pred.input_size,
              "bssl_version": code_version(), "results": results}
    write_json(report_path or out_dir / "eval.json", report)
    with atomic_path(out_dir / "eval.md") as tmp:
        tmp.write_text(format_table(results, title=f"Classifier accuracy: {Path(model).name}") + "\n"
                       + accuracy_summary(results["accuracy"]) + "\n")
    return results


def calibration_batches(cfg: Dict[str, Any], preprocess: Dict[str, Any], out_dir: os.PathLike | str, count: int = 64,
                        seed: int = 0):
    """`count` seeded training images of the run's dataset, preprocessed as the classifier expects, one per batch:
    what int8 quantisation of a classifier calibrates on (the user's own images, not the embedded data)."""
    from .config import validate
    from .eval import EvalContext, eval_splits

    cfg = validate(cfg)
    ctx = EvalContext(None, cfg, Path(out_dir))
    name, root = ctx.primary()
    train_split, _ = eval_splits(name)
    ds, _ = ctx.build(name, train_split, root)
    ds.transform = image_transform(preprocess)
    order = np.random.default_rng(seed).permutation(len(ds))[:count]
    for i in order:
        x, _ = ds[int(i)]
        yield x.numpy()[None].astype(np.float32)


def accuracy_summary(res: Dict[str, Any]) -> str:
    """One line per number: the deployed file, the compared classifier, the accuracy recorded at training."""
    d = res["details"]
    lines = [f"{Path(d['model']).name} ({d['runtime']}): top-1 {100 * res['value']:.2f}%, "
             f"top-5 {100 * d['top5']:.2f}% on {res['source']}"]
    if d.get("compare"):
        c = d["compare"]
        lines.append(f"{Path(c['model']).name} ({c['runtime']}): top-1 {100 * c['top1']:.2f}% on the same images, "
                     f"same top-1 class on {100 * c['top1_agreement']:.1f}% of them")
    t = d.get("trained") or {}
    if t.get("top1") is not None:
        lines.append(f"at training ({t.get('measured_by', '?')}, {t.get('runtime', 'pytorch')}): top-1 "
                     f"{100 * t['top1']:.2f}% on {t.get('source') or t.get('dataset')}")
    return "\n".join(lines)


__all__ = [
    "KIND", "FILE_NAME", "fold_standardization", "folded_head", "make_classifier", "save_classifier",
    "load_classifier", "ClassifierTarget", "FloatClassifierTarget", "Predictor", "load_predictor", "predict", "evaluate_accuracy",
    "metadata_props", "info_from_props", "classifier_info_of", "write_sidecar", "sidecar_path", "image_transform",
    "preprocess_info", "accuracy_summary", "calibration_batches",
]
