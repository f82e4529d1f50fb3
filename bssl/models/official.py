"""Import the released liuzechun/ReActNet checkpoints into bssl students.

- mobilenet/ (ReActNet-A): `feature.0.conv1/bn1` stem, `feature.i.{move11, binary_3x3, bn1, move12,
  prelu1, move13, move21, binary_pw | binary_pw_down1/2, bn2 | bn2_1/2, move22, prelu2, move23}`,
  `fc` -> `reactnet-a`.
- resnet/ (Bi-Real based ReActNet): `conv1`, `bn1`, `layerL.j.{move0, binary_conv, bn1, move1,
  prelu, move2, downsample.1/2}`, `fc` -> `reactnet-18`.
Step-2 checkpoints store binary weights flat as `weights` (N, 1); step-1 ones as a 4-D conv
`weight`; both load. The official shared `move21` bias in front of the two duplicated 1x1 convs
is copied into both units' RSign (the same function). The official code pads the signed input
with zeros, so the imported model uses pad_value=0.0 (exported kernels then need the zero-padding
correction; retraining with +1 padding avoids it). The width is read from the stem.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Tuple

import torch
from torch import nn

from ..errors import UserError
from ..nn import set_stage


def _strip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _bn(dst: Dict, src: Dict, ours: str, theirs: str) -> None:
    for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        if f"{theirs}.{leaf}" in src:
            dst[f"{ours}.{leaf}"] = src[f"{theirs}.{leaf}"]


def _bias(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _conv_weight(src: Dict, theirs: str, shape: Tuple[int, ...]) -> torch.Tensor:
    if f"{theirs}.weights" in src:
        return src[f"{theirs}.weights"].reshape(shape)
    if f"{theirs}.weight" in src:
        return src[f"{theirs}.weight"].reshape(shape)
    raise UserError(f"official checkpoint lacks {theirs}.weights / {theirs}.weight; is it a ReActNet checkpoint?")


def _unit(dst: Dict, src: Dict, ours: str, sign: str, conv: str, bn: str, model: nn.Module) -> None:
    target = model.get_submodule(f"{ours}.conv")
    dst[f"{ours}.sign.bias"] = _bias(src[f"{sign}.bias"])
    dst[f"{ours}.conv.weight"] = _conv_weight(src, conv, tuple(target.weight.shape))
    _bn(dst, src, f"{ours}.bn", bn)


def _rprelu(dst: Dict, src: Dict, ours: str, b_in: str, prelu: str, b_out: str) -> None:
    dst[f"{ours}.bias_in"] = _bias(src[f"{b_in}.bias"])
    dst[f"{ours}.prelu.weight"] = src[f"{prelu}.weight"]
    dst[f"{ours}.bias_out"] = _bias(src[f"{b_out}.bias"])


def convert_official_reactnet_a(src: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    dst: Dict[str, torch.Tensor] = {"stem.0.weight": src["feature.0.conv1.weight"]}
    _bn(dst, src, "stem.1", "feature.0.bn1")
    for i, block in enumerate(model.blocks):
        f, b = f"feature.{i + 1}", f"blocks.{i}"
        _unit(dst, src, f"{b}.unit3x3", f"{f}.move11", f"{f}.binary_3x3", f"{f}.bn1", model)
        _rprelu(dst, src, f"{b}.act1", f"{f}.move12", f"{f}.prelu1", f"{f}.move13")
        if block.downsample == "none":
            _unit(dst, src, f"{b}.unit1x1", f"{f}.move21", f"{f}.binary_pw", f"{f}.bn2", model)
        else:
            _unit(dst, src, f"{b}.unit1x1_a", f"{f}.move21", f"{f}.binary_pw_down1", f"{f}.bn2_1", model)
            _unit(dst, src, f"{b}.unit1x1_b", f"{f}.move21", f"{f}.binary_pw_down2", f"{f}.bn2_2", model)
        _rprelu(dst, src, f"{b}.act2", f"{f}.move22", f"{f}.prelu2", f"{f}.move23")
    dst["classifier.weight"], dst["classifier.bias"] = src["fc.weight"], src["fc.bias"]
    return dst


def convert_official_reactnet_18(src: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    dst: Dict[str, torch.Tensor] = {"stem.0.weight": src["conv1.weight"]}
    _bn(dst, src, "stem.1", "bn1")
    for idx in range(len(model.blocks)):
        f, b = f"layer{idx // 4 + 1}.{idx % 4}", f"blocks.{idx}"
        _unit(dst, src, f"{b}.unit", f"{f}.move0", f"{f}.binary_conv", f"{f}.bn1", model)
        _rprelu(dst, src, f"{b}.act", f"{f}.move1", f"{f}.prelu", f"{f}.move2")
        if f"{f}.downsample.1.weight" in src:
            dst[f"{b}.shortcut.1.weight"] = src[f"{f}.downsample.1.weight"]
            _bn(dst, src, f"{b}.shortcut.2", f"{f}.downsample.2")
    dst["classifier.weight"], dst["classifier.bias"] = src["fc.weight"], src["fc.bias"]
    return dst


def load_official_reactnet(path: os.PathLike | str, *, input_size: int = 224) -> nn.Module:
    """Build `reactnet-a` or `reactnet-18` from an official ReActNet .pth.tar (step 1 or 2)."""
    from . import build_model

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} could not be read as a torch file ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise UserError(f"checkpoint {path} is not a state dict or a dict with 'state_dict'")
    src = _strip(raw)
    if "feature.0.conv1.weight" in src:
        name, convert, base = "reactnet-a", convert_official_reactnet_a, 32
        stem_w = src["feature.0.conv1.weight"]
    elif "conv1.weight" in src and "layer1.0.move0.bias" in src:
        name, convert, base = "reactnet-18", convert_official_reactnet_18, 64
        stem_w = src["conv1.weight"]
    else:
        raise UserError(f"checkpoint {path} is not an official ReActNet (mobilenet/ or resnet/) checkpoint")
    step1 = any(re.search(r"(binary_3x3|binary_conv)\.weight$", k) for k in src)
    model = build_model(name, num_classes=int(src["fc.weight"].shape[0]), input_size=input_size,
                        width=stem_w.shape[0] / base, stem="imagenet", stage=1 if step1 else 2, pad_value=0.0)
    if model.stem[0].out_channels != stem_w.shape[0]:
        raise UserError(f"checkpoint {path}: stem width {stem_w.shape[0]} is not a multiple of 8 that bssl can build")
    try:
        model.load_state_dict(convert(src, model), strict=True)
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} does not match the official {name} layout ({exc})") from None
    return set_stage(model, 1 if step1 else 2)


__all__ = ["load_official_reactnet", "convert_official_reactnet_a", "convert_official_reactnet_18"]
