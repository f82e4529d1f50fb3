"""A deployable file for the `kernels` backend: 1-bit weights on disk, packed inference on load.

bssl.deploy.pack(model) works on an in-memory float student; loading a float checkpoint
first would make the float weights (117 MB for ReActNet-A) the peak memory and the file size
of the "deployed" model. This format stores the student's FoldedStudent (bssl.deploy.fold: per
unit the packed sign bits, RSign bias, scale and shift, and which RPReLU input biases the
shifts absorbed) and everything else (stem, RPReLU, head) as float. Loading builds the student
on the meta device, materialises only its float part and builds each unit's kernel straight
from the stored FoldedUnit (bssl.deploy.pack_folded), so no float copy of a binary weight ever
exists: loading ReActNet-A adds about 20 MiB to the process.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import UserError
from ..utils import atomic_path

# /2 stores FoldedUnits (RPReLU input biases already in the shifts, any pad value); /1 files
# (bits + alpha/BN only) are refused with a hint and re-created by the kernels backend.
FORMAT = "bssl-packed-student/2"

_UNIT_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "pad_value")


def _units(model: torch.nn.Module):
    from ..deploy.fold import binary_units

    return binary_units(model)


def save_packed(model: torch.nn.Module, path: os.PathLike | str) -> int:
    """Write a stage-2 student as its FoldedStudent + float rest; return the file size in bytes."""
    from ..deploy.fold import fold_student

    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        raise UserError("the kernels backend needs a bssl student (bssl.models.build_model or a student checkpoint)")
    units = _units(model)
    if not units:
        raise UserError(f"{type(model).__name__} has no BinaryConvBN unit; the kernels backend runs binary students only")
    folded = fold_student(model)
    # everything of a unit lives in its FoldedUnit
    unit_prefixes = tuple(n + "." for n, _ in units)
    fp_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith(unit_prefixes)}
    packed: Dict[str, Any] = {}
    for name, f in folded.units.items():
        packed[name] = {**{k: getattr(f, k) for k in _UNIT_KEYS},
                        "rsign_bias": torch.from_numpy(f.rsign_bias.copy()),
                        "weight_bits": torch.from_numpy(f.weight_bits.view(np.int64).copy()),
                        "scale": torch.from_numpy(f.scale.copy()), "shift": torch.from_numpy(f.shift.copy())}
    payload = {"format": FORMAT, "spec": dict(spec), "fp_state": fp_state, "units": packed,
               "absorbed": {k: list(v) for k, v in folded.absorbed.items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return os.path.getsize(path)


def _read(path: os.PathLike | str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one with objects weights_only refuses
        raise UserError(f"{path} is not a packed bssl student ({type(exc).__name__}: {str(exc)[:120]})") from None


def packed_format(path: os.PathLike | str) -> Optional[str]:
    """The format string of a packed file, None if it has none (or is not readable)."""
    try:
        payload = _read(path)
    except UserError:
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def folded_from_payload(payload: Dict[str, Any]):
    """The FoldedStudent stored in a save_packed payload."""
    from ..deploy.fold import FoldedStudent, FoldedUnit

    units = {}
    for name, d in payload["units"].items():
        units[name] = FoldedUnit(name=name, **{k: d[k] for k in _UNIT_KEYS},
                                 rsign_bias=d["rsign_bias"].numpy(), weight_bits=d["weight_bits"].numpy().view(np.uint64),
                                 scale=d["scale"].numpy(), shift=d["shift"].numpy())
    return FoldedStudent(units, {k: tuple(v) for k, v in payload.get("absorbed", {}).items()})


def load_packed(path: os.PathLike | str, threads: int = 1) -> torch.nn.Module:
    """Rebuild the packed-inference student of a file written by save_packed (as bssl.deploy.pack)."""
    from ..deploy import pack_folded
    from ..models import build_model

    payload = _read(path)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("bssl-packed-student/"):
            raise UserError(f"{path} is a packed bssl student in the older format {fmt}; this bssl reads {FORMAT}: "
                            "write it again with bssl.bench.packed_artifact.save_packed (bssl bench does so itself)")
        raise UserError(f"{path} is not a packed bssl student ({FORMAT})")
    folded = folded_from_payload(payload)
    spec = dict(payload["spec"])
    name = spec.pop("name")
    spec.pop("stage", None)
    with torch.device("meta"):
        model = build_model(name, **spec, stage=2)
    model.eval()
    units = dict(_units(model))
    if set(units) != set(folded.units):
        raise UserError(f"{path} does not match its spec: units {sorted(set(units) ^ set(folded.units))[:3]} differ")
    inside = {id(m) for u in units.values() for m in u.modules()}
    # only the float part is materialised; the units are replaced by their packed form below
    for m in model.modules():
        if id(m) not in inside:
            m.to_empty(device="cpu", recurse=False)
    unit_prefixes = tuple(u + "." for u in units)
    with warnings.catch_warnings():
        # BatchNorm fills a default num_batches_tracked for the (meta, soon replaced) units and warns
        warnings.filterwarnings("ignore", message=".*meta parameter.*")
        missing, unexpected = model.load_state_dict(payload["fp_state"], strict=False)
    leftover = [k for k in missing if not k.startswith(unit_prefixes)]
    if leftover or unexpected:
        raise UserError(f"{path} does not match its spec: missing {leftover[:3]}, unexpected {unexpected[:3]}")
    return pack_folded(model, folded, threads)
