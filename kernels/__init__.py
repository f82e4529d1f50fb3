"""Bit-packed XNOR-popcount kernels (C library in kernels/src, loaded with ctypes).

Paths: portable C (the reference), AVX2, AVX-512 VPOPCNTDQ, aarch64/armv7 NEON, chosen from
CPU features; ``BSSL_KERNELS_ISA=scalar|avx2|avx512|neon`` or :func:`set_isa` / :func:`use_isa`
force one. See docs/kernels.md.
"""

from ._lib import KernelsUnavailable, find_library
from .ops import (
    ISAS,
    OUT_MODES,
    PackedConv2d,
    PackedLinear,
    available,
    best_isa,
    bconv2d,
    bgemm,
    get_isa,
    pack_activations,
    pack_bits,
    pack_weights,
    peak_xor_popcount,
    set_isa,
    supported_isas,
    thread_min_work,
    threshold_from_affine,
    unpack_activations,
    unpack_bits,
    use_isa,
    words,
)

__all__ = [
    "ISAS", "OUT_MODES", "KernelsUnavailable", "PackedConv2d", "PackedLinear", "available", "best_isa",
    "bconv2d", "bgemm", "find_library", "get_isa", "pack_activations", "pack_bits", "pack_weights",
    "peak_xor_popcount", "set_isa", "supported_isas", "thread_min_work", "threshold_from_affine", "unpack_activations",
    "unpack_bits", "use_isa", "words",
]
