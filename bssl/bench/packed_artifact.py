"""A deployable file for the `kernels` backend: 1-bit weights on disk, packed inference on load.

bssl.deploy.pack(model) works on an in-memory float student; loading a float checkpoint
first would make the float weights (117 MB for ReActNet-A) the peak memory and the file size
of the "deployed" model. This format keeps each BinaryConvBN's weights as packed sign bits
(bssl.kernels.pack_weights) with alpha and BatchNorm folded into one scale and shift per output
channel (the fused transform the kernels apply), and everything else (stem, RSign/RPReLU biases,
head) as float. Loading builds the student on the meta device and materialises one binary unit
at a time (sign(W) from the bits, a BN equal to the folded affine map) right before handing it to
bssl.deploy.PackedBinaryConvBN, so the float copy of at most one layer is alive at any moment.
"""

from __future__ import annotations

import os
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


def load_packed(path: os.PathLike | str, threads: int = 1) -> torch.nn.Module:
    """Rebuild the packed-inference student of a file written by save_packed."""
    from .. import kernels as K
    from ..deploy import PackedBinaryConvBN
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
    for uname, data in payload["units"].items():
        unit = units[uname]
        unit.to_empty(device="cpu")
        prefix = f"{uname}."
        own = {k[len(prefix):]: v for k, v in payload["fp_state"].items() if k.startswith(prefix)}
        signs = K.unpack_bits(data["bits"].view(torch.uint64), data["in_channels"])  # (O, kh, kw, C) of +-1
        own["conv.weight"] = torch.as_tensor(signs).permute(0, 3, 1, 2).contiguous()  # alpha = 1
        # a BN that is exactly y = scale*x + shift (mean 0, var + eps = 1): PackedBinaryConvBN refolds it unchanged
        n = data["scale"].numel()
        own.update({"bn.weight": data["scale"], "bn.bias": data["shift"], "bn.running_mean": torch.zeros(n),
                    "bn.running_var": torch.full((n,), 1.0 - data["eps"], dtype=torch.float64).float(),
                    "bn.num_batches_tracked": torch.zeros((), dtype=torch.long)})
        unit.load_state_dict(own, strict=False)
        parent_name, _, child = uname.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedBinaryConvBN(unit, uname, threads))
        del unit, own, signs
    # what remains on the meta device is the float part: materialise it and load its weights
    packed_mods = {id(m) for u in model.modules() if isinstance(u, PackedBinaryConvBN) for m in u.modules()}
    for m in model.modules():
        if id(m) not in packed_mods:
            m.to_empty(device="cpu", recurse=False)
    unit_names = tuple(u + "." for u in payload["units"])
    rest = {k: v for k, v in payload["fp_state"].items() if not k.startswith(unit_names)}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    leftover = [k for k in missing if not k.startswith(unit_names)]
    if leftover or unexpected:
        raise UserError(f"{path} does not match its spec: missing {leftover[:3]}, unexpected {unexpected[:3]}")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
