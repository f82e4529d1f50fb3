"""OPs / parameters / bytes / activation-memory profiler for binary students.

Counting convention (the one that reproduces the published figures of ReActNet and Bi-Real Net):
- BOPs: multiply-accumulates of the binary convolutions, i.e. of every BinaryConvBN unit's
  BinaryConv2d: Cout * Hout * Wout * (Cin / groups) * kh * kw. Stage 1 units are still counted
  as BOPs (they are binary once the student is deployed).
- FLOPs: multiply-accumulates of the real-valued nn.Conv2d and nn.Linear layers only: the stem,
  the real-valued downsampling shortcuts (Bi-Real-18) or 1x1 convs (ReActNet-B/C), and the FC.
  Bias additions, BatchNorm, RSign/RPReLU shifts, PReLU, pooling, residual additions and
  concatenations are not counted (the papers leave them out; they are O(activations)).
- OPs = BOPs / 64 + FLOPs.
With this, ReActNet-A at 224 gives 4.82e9 BOPs + 1.19e7 FLOPs (stem 1.08e7 + FC 1.02e6) = 0.87e8
OPs, and Bi-Real-18 gives 1.68e9 BOPs + 1.38e8 FLOPs (7x7 stem 1.18e8, three 1x1 shortcuts
1.9e7, FC 5e5) = 1.64e8 OPs (published: 1.39e8 FLOPs, 1.63e8 OPs).

Parameters: binary = weights of the BinaryConv2d layers; fp = every other parameter (stem, BN
affine, RSign/RPReLU biases, PReLU slopes, FP convs, FC). BN running statistics are buffers and
not counted (deployment folds them into the per-channel scale/shift that the affine parameters
already account for).

Bytes: fp32_bytes = 4 * params. deployed_bytes = the binary weights bit-packed along input
channels into `word_bits`-bit words (channels padded to a whole word, as the kernels store
them: Cout * kh * kw * ceil(Cin / word_bits) * word_bits / 8) + one FP32 alpha per binary
output channel + 4 bytes per FP parameter.

Activation peak (estimate, FP32, batch 1, layers run one after another): the maximum over leaf
layers of input + output bytes of that layer, plus the input of the enclosing residual block
(an element of an nn.Sequential) that stays alive for the shortcut.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..nn import BinaryConv2d, BinaryConvBN


def _nbytes(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * 4
    if isinstance(t, (tuple, list)):
        return sum(_nbytes(v) for v in t)
    return 0


def _shape(t: Any) -> Optional[List[int]]:
    if isinstance(t, torch.Tensor):
        return list(t.shape)
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return list(t[0].shape)
    return None


def _conv_macs(conv: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = conv.kernel_size
    per_out = (conv.in_channels // conv.groups) * kh * kw
    return int(out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3] * per_out)


def packed_weight_bytes(conv: nn.Conv2d, word_bits: int = 64) -> int:
    kh, kw = conv.kernel_size
    words = math.ceil((conv.in_channels // conv.groups) / word_bits)
    return conv.out_channels * kh * kw * words * word_bits // 8


def _own_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


def profile_model(model: nn.Module, input_size: int, *, word_bits: int = 64) -> Dict[str, Any]:
    """Profile `model` on one 3 x input_size x input_size image. Returns totals and `layers`."""
    try:
        first = next(model.parameters())
        device, dtype = first.device, first.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    names = {m: n for n, m in model.named_modules()}
    parents: Dict[nn.Module, nn.Module] = {}
    for m in model.modules():
        for c in m.children():
            parents[c] = m
    inside_unit = {c for u in model.modules() if isinstance(u, BinaryConvBN) for c in u.modules() if c is not u}

    rows: List[Dict[str, Any]] = []
    counted: set = set()
    stack: List[tuple] = []  # (module, input bytes) of residual blocks being executed
    peak = {"bytes": 0, "layer": ""}
    hooks = []

    def is_block(m: nn.Module) -> bool:
        # a residual block: a composite element of a Sequential (a binary unit alone holds nothing)
        return (isinstance(parents.get(m), nn.Sequential) and not isinstance(m, BinaryConvBN)
                and any(True for _ in m.children()))

    def pre(m, inputs):
        if is_block(m):
            stack.append((m, _nbytes(inputs)))

    def post(m, inputs, out):
        if is_block(m) and stack and stack[-1][0] is m:
            stack.pop()
        if not any(True for _ in m.children()):
            held = sum(b for blk, b in stack)
            live = _nbytes(inputs) + _nbytes(out) + held
            if live > peak["bytes"]:
                peak.update(bytes=live, layer=names[m])
        row = None
        if isinstance(m, BinaryConvBN):
            unit_params = sum(p.numel() for p in m.parameters())
            row = dict(kind="binary", bops=_conv_macs(m.conv, out), flops=0,
                       params=unit_params, binary_params=m.conv.weight.numel(),
                       kernel=list(m.conv.kernel_size), stride=list(m.conv.stride),
                       packed_bytes=packed_weight_bytes(m.conv, word_bits), alphas=m.conv.out_channels)
        elif m in inside_unit:
            return
        elif isinstance(m, nn.Conv2d) and not isinstance(m, BinaryConv2d):
            row = dict(kind="fp", bops=0, flops=_conv_macs(m, out), params=_own_params(m), binary_params=0,
                       kernel=list(m.kernel_size), stride=list(m.stride))
        elif isinstance(m, nn.Linear):
            row = dict(kind="fp", bops=0, flops=int(out.numel() // out.shape[-1] * m.in_features * m.out_features),
                       params=_own_params(m), binary_params=0)
        elif _own_params(m):
            row = dict(kind="fp", bops=0, flops=0, params=_own_params(m), binary_params=0)
        if row is not None:
            if m in counted:  # a module called twice costs twice but owns its parameters once
                row.update(params=0, binary_params=0, packed_bytes=0, alphas=0)
            counted.add(m)
            rows.append(dict(name=names[m], type=type(m).__name__, input_shape=_shape(inputs),
                             output_shape=_shape(out), **row))

    for m in model.modules():
        if m is model:
            continue
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    # Parameters owned by modules that never ran (or by the model itself) still count.
    seen = sum(r["params"] for r in rows)
    total_params = sum(p.numel() for p in model.parameters())
    if total_params != seen:
        rows.append(dict(name="(other)", type="-", input_shape=None, output_shape=None, kind="fp", bops=0,
                         flops=0, params=total_params - seen, binary_params=0))

    bops = sum(r["bops"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    binary_params = sum(r["binary_params"] for r in rows)
    fp_params = total_params - binary_params
    packed = sum(r.get("packed_bytes", 0) for r in rows)
    alphas = sum(r.get("alphas", 0) for r in rows)
    deployed = packed + 4 * alphas + 4 * fp_params
    spec = getattr(model, "spec", None)
    return {
        "model": spec.get("name") if isinstance(spec, dict) else type(model).__name__,
        "spec": dict(spec) if isinstance(spec, dict) else None,
        "input_size": int(input_size),
        "output_shape": list(out.shape) if isinstance(out, torch.Tensor) else None,
        "bops": int(bops),
        "flops": int(flops),
        "ops": bops / 64.0 + flops,
        "params": int(total_params),
        "binary_params": int(binary_params),
        "fp_params": int(fp_params),
        "fp32_bytes": int(4 * total_params),
        "deployed_bytes": int(deployed),
        "packed_binary_bytes": int(packed),
        "word_bits": int(word_bits),
        "compression": (4 * total_params) / deployed if deployed else None,
        "activation_peak_bytes": int(peak["bytes"]),
        "activation_peak_layer": peak["layer"],
        "binary_layers": sum(1 for r in rows if r["kind"] == "binary"),
        "convention": "BOPs = binary-conv MACs; FLOPs = FP conv + linear MACs; OPs = BOPs/64 + FLOPs",
        "layers": rows,
    }


def _fmt(n: float) -> str:
    if n == 0:
        return "0"
    if abs(n) >= 1e5:
        return f"{n:.3e}"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:.3g}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.2f} MiB"


def format_table(report: Dict[str, Any], *, layers: bool = True) -> str:
    """A plain-text per-layer table followed by the totals."""
    lines = []
    if layers:
        header = f"{'layer':40s} {'type':14s} {'kind':6s} {'output':18s} {'params':>10s} {'BOPs':>10s} {'FLOPs':>10s}"
        lines += [header, "-" * len(header)]
        for r in report["layers"]:
            shape = "x".join(str(s) for s in (r["output_shape"] or [])[1:]) or "-"
            lines.append(f"{r['name'][:40]:40s} {r['type'][:14]:14s} {r['kind']:6s} {shape:18s} "
                         f"{r['params']:>10,d} {_fmt(r['bops']):>10s} {_fmt(r['flops']):>10s}")
        lines.append("")
    t = report
    lines += [
        f"model               {t['model']}  @ {t['input_size']}x{t['input_size']}",
        f"BOPs                {t['bops']:.3e}",
        f"FLOPs               {t['flops']:.3e}",
        f"OPs (BOPs/64+FLOPs) {t['ops']:.3e}",
        f"params              {t['params'] / 1e6:.2f}M  (binary {t['binary_params'] / 1e6:.2f}M, fp {t['fp_params'] / 1e6:.2f}M)",
        f"size FP32           {_mib(t['fp32_bytes'])}",
        f"size deployed       {_mib(t['deployed_bytes'])}  ({t['word_bits']}-bit packed weights + FP remainder, "
        f"{t['compression']:.1f}x smaller)" if t["compression"] else f"size deployed       {_mib(t['deployed_bytes'])}",
        f"activation peak     {_mib(t['activation_peak_bytes'])}  (FP32 estimate, at {t['activation_peak_layer']})",
    ]
    return "\n".join(lines)
