"""The packed binary convolution as one operator, shared by every packed export route.

`bssl::binary_conv2d` is a registered torch custom op; it is what `torch.export` sees for each
BinaryConvBN unit of a packed student, so
  - `torch.onnx.export(custom_translation_table=...)` writes it as the custom-domain ONNX node
    `ai.bssl::BinaryConv2d` (schema registered below with `onnx.defs.register_schema`),
  - `tvm.relax.frontend.torch.from_exported_program(custom_convert_map=...)` lowers it onto the
    XNOR-popcount TIR kernel (export/tvm_kernels.py),
  - the LCE route maps it onto larq's QuantConv2D.

Semantics (docs/export.md): with s = sign(X + B) (sign(0) = +1), one-padded by `padding` pixels,
    Y[n,o,y,x] = scale[o] * (K - 2 * popcount(bits(s window) XOR W[o])) + shift[o],  K = k*k*C.
W is (O, k, k, ceil(C/64)*8) uint8: bit c%8 of byte c//8 is 1 where the weight sign is -1,
i.e. the little-endian bytes of 64-bit words packed along input channels; padding bits are 0.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.ops import pack_weight_signs, unpack_bits

DOMAIN = "ai.bssl"
OP_TYPE = "BinaryConv2d"
OP_VERSION = 1
WORD_BITS = 64


def packed_bytes(channels: int) -> int:
    """Bytes per (o, ky, kx) row: channels rounded up to whole 64-bit words."""
    return (channels + WORD_BITS - 1) // WORD_BITS * (WORD_BITS // 8)


def pack_signs(weight_sign: torch.Tensor) -> torch.Tensor:
    """(O, C, k, k) tensor of +-1 (or any reals; negative = bit 1) -> (O, k, k, bytes) uint8.

    The little-endian bytes of bssl.kernels.ops.pack_weight_signs' uint64 words (the one packer)."""
    words = pack_weight_signs(weight_sign).astype("<u8")
    return torch.from_numpy(np.ascontiguousarray(words).view(np.uint8))


def unpack_signs(wbits: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of pack_signs: (O, k, k, bytes) uint8 -> (O, C, k, k) float of +-1 (kernels.ops.unpack_bits)."""
    words = np.ascontiguousarray(wbits.detach().cpu().numpy()).view("<u8").astype(np.uint64)
    return torch.from_numpy(unpack_bits(words, channels)).permute(0, 3, 1, 2).contiguous()


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@torch.library.custom_op("bssl::binary_conv2d", mutates_args=())
def binary_conv2d(x: torch.Tensor, bias: torch.Tensor, wbits: torch.Tensor, scale: torch.Tensor,
                  shift: torch.Tensor, in_channels: int, kernel: int, stride: int, padding: int) -> torch.Tensor:
    # Reference semantics in float: with +-1 operands the conv sum is an exact integer.
    w = unpack_signs(wbits, in_channels).to(x.dtype)
    s = torch.where(x + bias.view(1, -1, 1, 1) < 0, -1.0, 1.0).to(x.dtype)
    if padding:
        s = F.pad(s, [padding] * 4, value=1.0)
    y = F.conv2d(s, w, stride=stride)
    return y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


@binary_conv2d.register_fake
def _binary_conv2d_fake(x, bias, wbits, scale, shift, in_channels, kernel, stride, padding):
    n, _, h, w = x.shape
    return x.new_empty((n, wbits.shape[0], output_size(h, kernel, stride, padding),
                        output_size(w, kernel, stride, padding)))


OP_DOC = """Binary (XNOR-popcount) 2-D convolution with a fused per-channel output transform.
Y[n,o,y,x] = scale[o] * (K - 2*popcount(xor(bits(S), W[o]))) + shift[o], K = kernel*kernel*in_channels,
S = sign(X + B) with sign(0)=+1, spatially padded with +1 (bit 0) by `padding` on every side.
W: (O, kernel, kernel, ceil(in_channels/64)*8) uint8 (or (O, kernel, kernel, ceil(in_channels/64)) uint64),
bit c of the little-endian 64-bit word row is 1 where weight sign is -1; pad bits 0."""


def register_onnx_schema() -> None:
    """Register ai.bssl::BinaryConv2d with onnx so the checker and exporter know its signature."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    fp, attr, at = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType
    schema = OpSchema(
        OP_TYPE, DOMAIN, OP_VERSION, doc=OP_DOC,
        inputs=[fp("X", "T", "input (N, C, H, W)"), fp("B", "T", "RSign bias (C,)"),
                fp("W", "TW", "packed weight sign bits"), fp("scale", "T", "(O,)"), fp("shift", "T", "(O,)")],
        outputs=[fp("Y", "T", "output (N, O, OH, OW)")],
        type_constraints=[("T", ["tensor(float)"], "activations"),
                          ("TW", ["tensor(uint8)", "tensor(uint64)"], "packed bits")],
        attributes=[attr("in_channels", at.INT, "C"), attr("kernel", at.INT, "square kernel size"),
                    attr("stride", at.INT, "stride"), attr("padding", at.INT, "one-padding per side")],
    )
    onnx.defs.register_schema(schema)


def onnx_translation_table() -> dict:
    """custom_translation_table for torch.onnx.export: bssl::binary_conv2d -> ai.bssl::BinaryConv2d."""
    import onnxscript

    register_onnx_schema()
    opset = onnxscript.values.Opset(DOMAIN, OP_VERSION)

    def translate(x, bias, wbits, scale, shift, in_channels: int, kernel: int, stride: int, padding: int):
        return opset.BinaryConv2d(x, bias, wbits, scale, shift, in_channels=in_channels, kernel=kernel,
                                  stride=stride, padding=padding)

    return {torch.ops.bssl.binary_conv2d.default: translate}


def xnor_conv_numpy(x: np.ndarray, bias: np.ndarray, wbits: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                    in_channels: int, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Independent numpy implementation with real XOR + popcount on 64-bit words (for checks)."""
    n, c, h, w = x.shape
    words = np.ascontiguousarray(wbits).view(np.uint64) if wbits.dtype == np.uint8 else wbits  # (O, k, k, Q)
    q = words.shape[-1]
    neg = (x + bias.reshape(1, -1, 1, 1)) < 0
    bits = np.zeros((n, h + 2 * padding, w + 2 * padding, q * WORD_BITS), dtype=np.uint8)
    bits[:, padding:padding + h, padding:padding + w, :c] = neg.transpose(0, 2, 3, 1)
    xw = np.packbits(bits, axis=-1, bitorder="little")  # channel c -> bit c%8 of byte c//8
    xw = np.ascontiguousarray(xw).view(np.uint64)  # little-endian words: (N, Hp, Wp, Q)
    oh, ow = output_size(h, kernel, stride, padding), output_size(w, kernel, stride, padding)
    pop = np.zeros((n, words.shape[0], oh, ow), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            win = xw[:, ky:ky + stride * (oh - 1) + 1:stride, kx:kx + stride * (ow - 1) + 1:stride, :]
            # (N, OH, OW, 1, Q) ^ (1, 1, 1, O, Q) -> popcount summed over words
            diff = np.bitwise_count(win[:, :, :, None, :] ^ words[None, None, None, :, ky, kx, :])
            pop += diff.sum(-1, dtype=np.int64).transpose(0, 3, 1, 2)
    k = kernel * kernel * in_channels
    dot = (k - 2 * pop).astype(np.float32)
    return dot * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def onnx_reference_op():
    """An onnx.reference OpRun for ai.bssl::BinaryConv2d (ReferenceEvaluator(new_ops=[...]))."""
    from onnx.reference.op_run import OpRun

    class BinaryConv2d(OpRun):
        op_domain = DOMAIN

        def _run(self, X, B, W, scale, shift, in_channels=None, kernel=None, stride=None, padding=None):
            return (xnor_conv_numpy(X, B, W, scale, shift, in_channels, kernel, stride, padding).astype(X.dtype),)

    return BinaryConv2d


def square(value, what: str, where: str) -> int:
    """Collapse a torch (a, a) pair to a; UserError for non-square settings the packed op lacks."""
    from ..errors import UserError

    pair: Tuple[int, ...] = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(set(pair)) != 1:
        raise UserError(f"binary conv {where} has non-square {what} {pair}; the packed export supports square ones only")
    return int(pair[0])
