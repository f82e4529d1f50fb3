"""LCE export: packed student -> graph spec (JSON) + weights (.npz) -> larq/Keras -> .tflite.

The student is exported with torch.export (packed graph, one `bssl::binary_conv2d` per
BinaryConvBN), every node is mapped to one NHWC Keras op; nodes whose inputs are all constants
(parameter views, weight transposes) are evaluated here. The larq environment (its own venv,
export/larq_env.py) runs export/larq_build.py, which builds the Keras model with larq layers
and converts it with `larq_compute_engine.convert_keras_model`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..classifier import classifier_info_of, write_sidecar
from ..errors import UserError
from ..utils import atomic_path
from . import fold, larq_env, ops


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model"
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return f"{path.replace('student.', '', 1) or 'model'} ({cls_name.rsplit('.', 1)[-1]})"


def _pair(v) -> List[int]:
    return list(v) * 2 if len(v) == 1 else list(v)


class _Translator:
    """torch.export graph -> list of NHWC ops for larq_build.py."""

    def __init__(self, ep):
        self.ep = ep
        self.ops: List[Dict[str, Any]] = []
        self.arrays: Dict[str, np.ndarray] = {}
        self.env: Dict[str, Tuple[str, Any]] = {}  # node name -> ("act", rank) | ("const", tensor)

    def array(self, key: str, value) -> str:
        self.arrays[key] = np.ascontiguousarray(torch.as_tensor(value).detach().float().numpy())
        return key

    def constant_inputs(self) -> Dict[str, torch.Tensor]:
        sig = self.ep.graph_signature
        state = {**self.ep.state_dict, **self.ep.constants}
        out = {}
        for spec in sig.input_specs:
            if spec.kind.name != "USER_INPUT":
                out[spec.arg.name] = state[spec.target]
        return out

    def value(self, a):
        if isinstance(a, torch.fx.Node):
            kind, v = self.env[a.name]
            return v if kind == "const" else a
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x) for x in a)
        return a

    def is_act(self, a) -> bool:
        if isinstance(a, torch.fx.Node):
            return self.env[a.name][0] == "act"
        if isinstance(a, (list, tuple)):
            return any(self.is_act(x) for x in a)
        return False

    def emit(self, node, kind: str, inputs, out_rank: int, **attrs) -> None:
        self.ops.append({"op": kind, "name": node.name, "inputs": [i.name for i in inputs], **attrs})
        self.env[node.name] = ("act", out_rank)

    def nhwc_const(self, t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1) if t.dim() == 4 else t

    def run(self) -> List[str]:
        consts = self.constant_inputs()
        outputs: List[str] = []
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in consts:
                    self.env[node.name] = ("const", consts[node.name])
                else:
                    self.env[node.name] = ("act", 4)
                    self.input_name = node.name
            elif node.op == "call_function":
                if not self.is_act(list(node.args) + list(node.kwargs.values())):
                    # Parameter views and the like: evaluate now, they become constants.
                    self.env[node.name] = ("const", node.target(*self.value(node.args), **self.value(node.kwargs)))
                else:
                    self.translate(node)
            elif node.op == "output":
                outputs = [a.name for a in node.args[0]]
        return outputs

    def translate(self, node) -> None:  # noqa: C901 (one branch per op)
        t = str(node.target)
        a = node.args
        rank = lambda n: self.env[n.name][1]  # noqa: E731
        if t == "bssl.binary_conv2d.default":
            x, bias, wbits, scale, shift = a[0], *self.value(a[1:5])
            cin, k, s, p = (int(v) for v in a[5:9])
            sign = ops.unpack_signs(wbits, cin).permute(2, 3, 1, 0)  # HWIO, +-1
            self.emit(node, "bconv", [x], 4, kernel_size=k, stride=s, padding=p,
                      bias=self.array(f"{node.name}.bias", bias), kernel=self.array(f"{node.name}.kernel", sign),
                      scale=self.array(f"{node.name}.scale", scale), shift=self.array(f"{node.name}.shift", shift))
        elif t == "aten.conv2d.default":
            x, w = a[0], self.value(a[1])
            b = self.value(a[2]) if len(a) > 2 else None
            stride, padding, dilation = (_pair(a[i]) if len(a) > i else [d, d] for i, d in ((3, 1), (4, 0), (5, 1)))
            groups = int(a[6]) if len(a) > 6 else 1
            if isinstance(a[4] if len(a) > 4 else 0, str):
                raise UserError(f"layer {_module_of(node)} uses string padding; the lce export needs integers")
            self.emit(node, "conv2d", [x], 4, weight=self.array(f"{node.name}.w", w.permute(2, 3, 1, 0)),
                      bias=self.array(f"{node.name}.b", b) if b is not None else None, stride=stride,
                      padding=padding, dilation=dilation, groups=groups)
        elif t in ("aten.add.Tensor", "aten.mul.Tensor"):
            if len(a) > 2 or node.kwargs.get("alpha", 1) != 1:
                raise UserError(f"layer {_module_of(node)}: add with alpha is not mapped by the lce export")
            acts = [v for v in a if self.is_act(v)]
            if len(acts) == 2:
                if t == "aten.mul.Tensor":
                    raise UserError(f"layer {_module_of(node)}: elementwise product of two activations is not mapped")
                self.emit(node, "add", acts, rank(acts[0]))
            else:
                c = next(self.value(v) for v in a if not self.is_act(v))
                c = torch.as_tensor(c, dtype=torch.float32)
                kind = "add_const" if t == "aten.add.Tensor" else "mul_const"
                self.emit(node, kind, acts, rank(acts[0]), const=self.array(f"{node.name}.c", self.nhwc_const(c)))
        elif t == "aten.prelu.default":
            self.emit(node, "prelu", [a[0]], rank(a[0]), rank=rank(a[0]),
                      alpha=self.array(f"{node.name}.alpha", self.value(a[1]).reshape(-1)))
        elif t == "aten.relu.default":
            self.emit(node, "relu", [a[0]], rank(a[0]))
        elif t == "aten.hardtanh.default":
            self.emit(node, "clip", [a[0]], rank(a[0]), min=float(a[1]) if len(a) > 1 else -1.0,
                      max=float(a[2]) if len(a) > 2 else 1.0)
        elif t == "aten.avg_pool2d.default":
            k = _pair(a[1])
            s = _pair(a[2]) if len(a) > 2 and a[2] else k
            if len(a) > 3 and any(_pair(a[3])) or len(a) > 4 and a[4]:
                raise UserError(f"layer {_module_of(node)}: padded or ceil-mode average pooling is not mapped")
            self.emit(node, "avgpool", [a[0]], 4, kernel=k, stride=s)
        elif t == "aten.max_pool2d.default":
            k = _pair(a[1])
            s = _pair(a[2]) if len(a) > 2 and a[2] else k
            p = _pair(a[3]) if len(a) > 3 else [0, 0]
            if len(a) > 5 and a[5]:
                raise UserError(f"layer {_module_of(node)}: ceil-mode max pooling is not mapped")
            self.emit(node, "maxpool", [a[0]], 4, kernel=k, stride=s, padding=p)
        elif t == "aten.cat.default":
            tensors, dim = a[0], (a[1] if len(a) > 1 else 0)
            r = rank(tensors[0])
            if dim not in (1, 1 - r):
                raise UserError(f"layer {_module_of(node)}: concatenation along dim {dim} is not mapped (channels only)")
            self.emit(node, "concat", list(tensors), r)
        elif t in ("aten.adaptive_avg_pool2d.default", "aten.mean.dim"):
            if t == "aten.adaptive_avg_pool2d.default":
                if _pair(a[1]) != [1, 1]:
                    raise UserError(f"layer {_module_of(node)}: adaptive pooling to {a[1]} is not mapped (only 1x1)")
                keep = True
            else:
                dims = sorted(int(d) % 4 for d in a[1])
                if dims != [2, 3]:
                    raise UserError(f"layer {_module_of(node)}: mean over dims {a[1]} is not mapped")
                keep = bool(a[2]) if len(a) > 2 else False
            self.emit(node, "gap", [a[0]], 4 if keep else 2, keepdims=keep)
        elif t in ("aten.flatten.using_ints", "aten.view.default", "aten.reshape.default"):
            shape = tuple(node.args[0].meta["val"].shape)
            out_shape = tuple(node.meta["val"].shape)
            if not (len(shape) == 4 and shape[2] == shape[3] == 1 and len(out_shape) == 2) and shape != out_shape:
                raise UserError(f"layer {_module_of(node)}: reshape {shape} -> {out_shape} is not mapped "
                                "(NHWC order differs unless the map is 1x1)")
            self.emit(node, "flatten", [a[0]], 2)
        elif t == "aten.linear.default":
            w = self.value(a[1])
            b = self.value(a[2]) if len(a) > 2 else None
            self.emit(node, "dense", [a[0]], 2, kernel=self.array(f"{node.name}.k", w.t()),
                      bias=self.array(f"{node.name}.b", b) if b is not None else None)
        else:
            raise UserError(f"layer {_module_of(node)}: op {t} has no larq/LCE mapping; the lce export maps "
                            "convs, BinaryConvBN units, adds, PReLU/ReLU, pooling, concat and linear layers")


def graph_spec(src, input_size: int) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The op list and weights the larq build script consumes."""
    model = fold.deploy_model(src, packed=True)
    try:
        ep = torch.export.export(model, (torch.zeros(1, 3, input_size, input_size),))
    except Exception as exc:
        raise UserError(f"torch.export of the student failed: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200]}") from None
    tr = _Translator(ep)
    outputs = tr.run()
    spec = {"input_size": [input_size, input_size], "input_name": tr.input_name, "ops": tr.ops, "outputs": outputs}
    return spec, tr.arrays


def export_lce(src, out_path: Path, check_samples: int = 8, input_size: Optional[int] = None,
               larq_python: Optional[Path] = None, seed: int = 0) -> Dict[str, Any]:
    """Write model.tflite through the larq environment; compare LCE with PyTorch on random inputs."""
    student = fold.load_student_model(src)
    size = input_size or fold.input_size_of(student)
    py = larq_env.larq_python(larq_python)
    spec, arrays = graph_spec(student, size)
    out_path = Path(out_path)
    result: Dict[str, Any] = {"format": "lce", "input_size": size, "layout": "NHWC", "larq_python": str(py),
                              "binary_convs": sum(op["op"] == "bconv" for op in spec["ops"])}
    with tempfile.TemporaryDirectory(prefix="bssl-lce-") as work, atomic_path(out_path) as tmp:
        work = Path(work)
        (work / "spec.json").write_text(json.dumps(spec))
        np.savez(work / "weights.npz", **arrays)
        args = [Path(__file__).with_name("larq_build.py"), work / "spec.json", work / "weights.npz", tmp]
        if check_samples:
            x = fold.check_inputs(check_samples, size, seed)
            np.savez(work / "inputs.npz", x=x.numpy())
            args += ["--check", work / "inputs.npz", work / "outputs.npz"]
        proc = larq_env.run_larq(py, args)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise UserError(f"the larq conversion failed in {py}: {tail}")
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                result.update(json.loads(line))
        if check_samples:
            got = np.load(work / "outputs.npz")
            ref_logits, ref_feats = fold.reference_outputs(student, x)
            cmp = fold.compare(ref_logits, got["logits"])
            cmp["features"] = fold.compare(ref_feats, got["features"])
            cmp["runtime"] = "larq-compute-engine"
            result["equivalence"] = cmp
    info = classifier_info_of(student)
    if info:  # .tflite has no metadata table here: class names and preprocessing go to model.tflite.json
        result["sidecar"] = str(write_sidecar(out_path, info, "lce"))
    result["path"] = str(out_path)
    result["bytes"] = out_path.stat().st_size
    return result
