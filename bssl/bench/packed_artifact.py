"""A deployable file for the `kernels` backend: 1-bit weights on disk, packed inference on load.

bssl.deploy.pack(model) works on an in-memory float student; loading a float checkpoint
first would make the float weights (117 MB for ReActNet-A) the peak memory and the file size
of the "deployed" model. This format keeps each BinaryConvBN's weights as packed sign bits
(bssl.kernels.pack_weights) with alpha and BatchNorm folded into one scale and shift per output
channel (the fused transform the kernels apply), and everything else (stem, RSign/RPReLU biases,
head) as float. Loading builds the student on the meta device, materialises only its float part
and builds each unit's kernel straight from the stored bits (bssl.kernels.PackedConv2d), so no
float copy of a binary weight ever exists: loading ReActNet-A adds about 20 MiB to the process.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict

import torch

from ..errors import UserError
from ..utils import atomic_path

FORMAT = "bssl-packed-student/1"


def _units(model: torch.nn.Module):
    from ..nn import BinaryConvBN

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConvBN)]


def save_packed(model: torch.nn.Module, path: os.PathLike | str) -> int:
    """Write a stage-2 student as packed bits + float rest; return the file size in bytes."""
    from .. import kernels as K

    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        raise UserError("the kernels backend needs a bssl student (bssl.models.build_model or a student checkpoint)")
    units = _units(model)
    if not units:
        raise UserError(f"{type(model).__name__} has no BinaryConvBN unit; the kernels backend runs binary students only")
    folded = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
    skip = {f"{n}.{k}" for n, _ in units for k in folded}
    fp_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in skip}
    packed: Dict[str, Any] = {}
    for name, unit in units:
        w = unit.conv.weight.detach().float().cpu()
        bn = unit.bn
        if bn.running_mean is None or bn.running_var is None:
            raise UserError(f"{name}: its BatchNorm tracks no running statistics, so it cannot be folded")
        # alpha and BN folded into one multiply-add per channel, as the kernels apply it
        alpha = w.abs().mean(dim=(1, 2, 3)).double()
        inv = 1.0 / torch.sqrt(bn.running_var.detach().double().cpu() + bn.eps)
        gamma = bn.weight.detach().double().cpu() if bn.weight is not None else torch.ones_like(inv)
        beta = bn.bias.detach().double().cpu() if bn.bias is not None else torch.zeros_like(inv)
        packed[name] = {"bits": torch.as_tensor(K.pack_weights(w)).view(torch.int64).clone(),
                        "in_channels": int(w.shape[1]), "eps": float(bn.eps),
                        "scale": (gamma * alpha * inv).float(),
                        "shift": (beta - gamma * bn.running_mean.detach().double().cpu() * inv).float()}
    payload = {"format": FORMAT, "spec": dict(spec), "fp_state": fp_state, "units": packed}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return os.path.getsize(path)


def _unit_from_bits(data: Dict[str, Any], name: str, template: torch.nn.Module, threads: int, extra_shift=None):
    """A bssl.deploy.PackedBinaryConvBN whose kernel is built from the stored bits: no float weights.

    The unit on the meta device gives the geometry; the module gets exactly the attributes
    PackedBinaryConvBN.__init__ sets (the test against bssl.deploy.pack guards this)."""
    from .. import kernels as K
    from ..deploy import PackedBinaryConvBN

    conv = template.conv
    stride = int(conv.stride[0])
    padding = int(conv.padding[0])
    if float(getattr(conv, "pad_value", 1.0)) != 1.0:
        raise UserError(f"{name}: zero-padded students are not supported by the packed file; use pad_value=1")
    scale = data["scale"].double()
    shift = data["shift"].double()
    if extra_shift is not None:
        shift = shift + extra_shift.detach().double().cpu().reshape(-1)
    bits = data["bits"].view(torch.uint64)
    mod = PackedBinaryConvBN.__new__(PackedBinaryConvBN)
    torch.nn.Module.__init__(mod)
    mod.in_channels, mod.out_channels = int(data["in_channels"]), int(bits.shape[0])
    mod.kernel_size = (int(bits.shape[1]), int(bits.shape[2]))
    mod.stride, mod.padding, mod.pad_value, mod.threads = stride, padding, 1.0, int(threads)
    mod.kernel = K.PackedConv2d(bits, mod.in_channels, stride, padding, out="float", scale=scale, shift=shift)
    mod.register_buffer("rsign_bias", data["rsign_bias"].float().contiguous().clone())
    mod.register_buffer("scale", scale.float())
    mod._wsign = None
    mod._corr = {}
    return mod


def load_packed(path: os.PathLike | str, threads: int = 1) -> torch.nn.Module:
    """Rebuild the packed-inference student of a file written by save_packed.

    Mirrors bssl.deploy.pack: every BinaryConvBN runs on the kernels, and where pack folds the
    following RPReLU's input bias into the unit's shift it is folded here too.
    """
    from .. import deploy
    from ..models import build_model

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a packed bssl student ({FORMAT})")
    spec = dict(payload["spec"])
    name = spec.pop("name")
    spec.pop("stage", None)
    with torch.device("meta"):
        model = build_model(name, **spec, stage=2)
    model.eval()
    units = dict(_units(model))
    inside = {id(m) for u in units.values() for m in u.modules()}
    # the float part first (stem, RPReLU, head), so the RPReLU biases to fold are real numbers
    for m in model.modules():
        if id(m) not in inside:
            m.to_empty(device="cpu", recurse=False)
    unit_names = tuple(u + "." for u in payload["units"])
    rest = {k: v for k, v in payload["fp_state"].items() if not k.startswith(unit_names)}
    with warnings.catch_warnings():
        # BatchNorm fills a default num_batches_tracked for the (meta, soon replaced) units and warns
        warnings.filterwarnings("ignore", message=".*meta parameter.*")
        missing, unexpected = model.load_state_dict(rest, strict=False)
    leftover = [k for k in missing if not k.startswith(unit_names)]
    if leftover or unexpected:
        raise UserError(f"{path} does not match its spec: missing {leftover[:3]}, unexpected {unexpected[:3]}")
    folds = getattr(deploy, "_rprelu_folds", None)
    prelu_out = getattr(deploy, "_PReLUOut", None)
    shifts, acts = folds(model) if folds is not None and prelu_out is not None else ({}, [])
    for uname, data in payload["units"].items():
        unit = units.pop(uname)
        data = {**data, "rsign_bias": payload["fp_state"][f"{uname}.sign.bias"]}
        packed = _unit_from_bits(data, uname, unit, threads, shifts.get(id(unit)))
        parent_name, _, child = uname.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, packed)
    for blk, attr in acts:
        setattr(blk, attr, prelu_out(getattr(blk, attr)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
