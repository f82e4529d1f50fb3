"""Loading teachers: bssl teacher checkpoints, official MoCo v2 / SimSiam `.pth.tar` files and
torchvision state dicts, told apart by their keys. Everything is read with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from bssl.errors import UserError

from .backbone import ARCHS, build_backbone

# (prefix, format) tried in order; the official scripts save DDP-wrapped models ("module.")
_PREFIXES = (
    ("module.encoder_q.", "moco"),
    ("encoder_q.", "moco"),
    ("module.encoder.", "simsiam"),
    ("encoder.", "simsiam"),
    ("module.base_encoder.", "moco"),
    ("module.backbone.", "torchvision"),
    ("backbone.", "torchvision"),
    ("module.", "torchvision"),
    ("", "torchvision"),
)
_TRUNK = ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight")


def _read(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; pass a bssl teacher.pt, an official MoCo/SimSiam .pth.tar or a torchvision .pth")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-object files
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"teacher checkpoint {path} could not be read with weights_only=True ({first})") from None


def _strip(state: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], str]:
    """The ResNet trunk's state dict without heads (fc), and the format its keys reveal."""
    for prefix, fmt in _PREFIXES:
        if all(prefix + t in state for t in _TRUNK):
            trunk = {k[len(prefix):]: v for k, v in state.items()
                     if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}
            trunk = {k: v for k, v in trunk.items() if not k.startswith("fc.")}
            return trunk, fmt
    return {}, ""


def _infer_arch(trunk: Dict[str, torch.Tensor]) -> str:
    if "layer1.0.conv3.weight" in trunk:
        return "resnet50"
    return "resnet18"


def _load_into(backbone: nn.Module, trunk: Dict[str, torch.Tensor], path: Path, arch: str) -> None:
    own = backbone.state_dict()
    missing = [k for k in own if k not in trunk]
    unexpected = [k for k in trunk if k not in own]
    wrong = [k for k in own if k in trunk and tuple(own[k].shape) != tuple(trunk[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"shape of {wrong[0]}: file {tuple(trunk[wrong[0]].shape)} vs {arch} {tuple(own[wrong[0]].shape)}" if wrong
                  else f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        raise UserError(f"teacher checkpoint {path} does not fit a {arch} backbone ({detail}); "
                        f"check the file or pass the matching arch")
    backbone.load_state_dict(trunk, strict=True)


def load_teacher(path, arch: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Backbone in eval mode returning (N, feature_dim) features, and an info dict
    (format, arch, small_stem, feature_dim, method, epoch, path).

    `arch` overrides the architecture recorded in or inferred from the file.
    """
    path = Path(path)
    obj = _read(path)
    if not isinstance(obj, dict):
        raise UserError(f"teacher checkpoint {path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    if "bssl_kind" in obj:
        return _load_bssl(obj, path, arch)
    state = obj
    for key in ("state_dict", "model", "online_backbone"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    trunk, fmt = _strip(state)
    if not trunk:
        sample = ", ".join(list(k for k in state if isinstance(k, str))[:4]) or "none"
        raise UserError(f"teacher checkpoint {path}: keys match no known format (bssl teacher, MoCo module.encoder_q.*, "
                        f"SimSiam module.encoder.*, torchvision conv1/layer1..4); first keys: {sample}")
    file_arch = obj.get("arch") if isinstance(obj.get("arch"), str) else None
    arch = arch or (file_arch if file_arch in ARCHS else None) or _infer_arch(trunk)
    if arch not in ARCHS:
        raise UserError(f"teacher checkpoint {path}: architecture {arch!r} is not supported; known: {', '.join(sorted(ARCHS))}")
    small_stem = tuple(trunk["conv1.weight"].shape[-2:]) == (3, 3)
    backbone = build_backbone(arch, small_stem=small_stem)
    _load_into(backbone, trunk, path, arch)
    backbone.eval()
    info = {"format": fmt, "arch": arch, "small_stem": small_stem, "feature_dim": int(backbone.feature_dim),
            "method": {"moco": "mocov2", "simsiam": "simsiam"}.get(fmt, "supervised-or-unknown"),
            "epoch": obj.get("epoch") if isinstance(obj.get("epoch"), int) else None, "path": str(path)}
    return backbone, info


def _load_bssl(ckpt: Dict[str, Any], path: Path, arch: Optional[str]):
    if ckpt["bssl_kind"] != "teacher":
        raise UserError(f"checkpoint {path} holds a bssl {ckpt['bssl_kind']!r}, not a teacher; pass the teacher.pt of `bssl teacher`")
    for key in ("backbone", "arch", "small_stem", "feature_dim"):
        if key not in ckpt:
            raise UserError(f"teacher checkpoint {path} lacks the {key!r} entry; it was not written by this bssl version")
    arch = arch or ckpt["arch"]
    if arch not in ARCHS:
        raise UserError(f"teacher checkpoint {path}: architecture {arch!r} is not supported; known: {', '.join(sorted(ARCHS))}")
    backbone = build_backbone(arch, small_stem=bool(ckpt["small_stem"]))
    if int(ckpt["feature_dim"]) != int(backbone.feature_dim):
        raise UserError(f"teacher checkpoint {path} records feature_dim {ckpt['feature_dim']} but a {arch} backbone gives "
                        f"{backbone.feature_dim}; the file is inconsistent or the arch is wrong")
    _load_into(backbone, ckpt["backbone"], path, arch)
    backbone.eval()
    info = {"format": "bssl", "arch": arch, "small_stem": bool(ckpt["small_stem"]), "feature_dim": int(ckpt["feature_dim"]),
            "method": ckpt.get("method"), "epoch": ckpt.get("epoch"), "path": str(path),
            "image_size": ckpt.get("image_size"), "heads": sorted(ckpt.get("heads", {}))}
    return backbone, info


def load_teacher_heads(path) -> Dict[str, Dict[str, torch.Tensor]]:
    """State dicts of the heads (projector, predictor) stored in a bssl teacher checkpoint."""
    obj = _read(Path(path))
    if not (isinstance(obj, dict) and obj.get("bssl_kind") == "teacher"):
        raise UserError(f"{path} is not a bssl teacher checkpoint; only those carry heads")
    return obj.get("heads", {})
