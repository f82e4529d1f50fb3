"""Python API of the bit-packed kernels, on numpy arrays and CPU torch tensors.

Conventions: a bit 1 means -1 (x < 0), channels are packed into uint64 words along the last
axis (channel c in word c // 64, bit c % 64, tail bits 0 = +1); activations are NHWC packed
``(N, H, W, Cw)``; weights ``(O, kh, kw, Cw)``; spatial padding is +1. The +-1 dot product of a
layer with K = kh*kw*C_in entries is ``K - 2 * popcount(a ^ w)``.

Results come back as the input's kind: torch tensors for torch inputs, numpy arrays otherwise.
Packed words are ``uint64`` (``int64`` inputs are accepted and reinterpreted).
"""

from __future__ import annotations

import ctypes
import math
import os
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib

try:
    import torch
except ImportError:  # the kernels work on numpy alone
    torch = None

ISAS: Tuple[str, ...] = ("scalar", "avx2", "avx512", "neon")
OUT_MODES = {"dot": 0, "float": 1, "bits": 2}
BLOCK_O = 32

Array = Union[np.ndarray, "torch.Tensor"]

_env_checked = False


def _L() -> ctypes.CDLL:
    """The library, with the BSSL_KERNELS_ISA override checked once (clear error if bad)."""
    global _env_checked
    lib = _lib.lib()
    if not _env_checked:
        _env_checked = True
        env = os.environ.get("BSSL_KERNELS_ISA", "").strip()
        if env:
            set_isa(env, _lib_handle=lib)
    return lib


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise ValueError(f"{what}: {_lib.last_error()}")


# ---- code paths ----------------------------------------------------------------------------


def available() -> bool:
    """True when the compiled library can be loaded."""
    try:
        _lib.lib()
        return True
    except _lib.KernelsUnavailable:
        return False


def supported_isas() -> List[str]:
    """Code paths compiled into the library that this CPU can run (scalar always)."""
    lib = _L()
    return [name for i, name in enumerate(ISAS) if lib.bssl_isa_supported(i)]


def best_isa() -> str:
    return ISAS[_L().bssl_isa_best()]


def get_isa() -> str:
    return ISAS[_L().bssl_isa_get()]


def set_isa(name: str, _lib_handle: Optional[ctypes.CDLL] = None) -> None:
    """Force a code path for the whole process (what BSSL_KERNELS_ISA does at start-up)."""
    lib = _lib_handle or _L()
    if name not in ISAS:
        raise ValueError(f"unknown kernel path {name!r} (BSSL_KERNELS_ISA or set_isa); use one of {', '.join(ISAS)}")
    if not lib.bssl_isa_supported(ISAS.index(name)):
        ok = [n for i, n in enumerate(ISAS) if lib.bssl_isa_supported(i)]
        raise ValueError(f"kernel path {name!r} is not compiled in or not supported by this CPU; use one of {', '.join(ok)}")
    _check(lib.bssl_isa_set(ISAS.index(name)), "set_isa")


@contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run a block on one code path, then restore the previous one."""
    prev = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(prev)


def thread_min_work(words: Optional[int] = None) -> int:
    """Get (and with `words`, set) the work in word-XORs below which a call uses fewer threads
    than asked (default 2^18; 0 splits every call; env BSSL_KERNELS_THREAD_WORK)."""
    lib = _L()
    if words is not None:
        if int(words) < 0:
            raise ValueError(f"thread_min_work: expected >= 0, got {words}")
        _check(lib.bssl_thread_min_work_set(int(words)), "thread_min_work")
    return int(lib.bssl_thread_min_work_get())


def peak_xor_popcount(iters: int = 10_000_000) -> Tuple[int, int]:
    """Run the register-only XOR+popcount+add loop of the current path; returns (bit MACs, checksum)."""
    ops = ctypes.c_int64(0)
    chk = _L().bssl_peak_xor_popcount(int(iters), ctypes.byref(ops))
    return int(ops.value), int(chk)


# ---- array plumbing ------------------------------------------------------------------------


def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _np(x, name: str, kind: str) -> np.ndarray:
    """A C-contiguous numpy view of x (no copy); kind 'f32', 'u64' or 'f32any' checks dtype."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise TypeError(f"{name}: the kernels run on CPU tensors, got a tensor on {x.device}")
        x = x.detach()
        if not x.is_contiguous():
            raise ValueError(f"{name}: tensor is not contiguous (strides {tuple(x.stride())}); call .contiguous() first")
        if kind == "u64" and x.dtype == torch.int64:
            x = x.view(torch.uint64)
        arr = x.numpy()
    elif isinstance(x, np.ndarray):
        arr = x
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name}: array is not C-contiguous; use np.ascontiguousarray first")
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if kind == "u64":
        if arr.dtype == np.int64:
            arr = arr.view(np.uint64)
        if arr.dtype != np.uint64:
            raise TypeError(f"{name}: packed bits must be uint64 (or int64), got {arr.dtype}")
    elif kind == "f32":
        if arr.dtype != np.float32:
            raise TypeError(f"{name}: expected float32, got {arr.dtype}")
    return arr


def _buf(x, name: str, kind: str) -> Tuple[int, Tuple[int, ...]]:
    """(data pointer, shape) of a C-contiguous CPU buffer, checked, without copies.

    The per-call hot path: torch tensors are read through data_ptr() (no numpy round trip).
    kind: 'u64' (uint64 or int64 words) or 'f32'."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise TypeError(f"{name}: the kernels run on CPU tensors, got a tensor on {x.device}")
        ok = (x.dtype in (torch.uint64, torch.int64)) if kind == "u64" else x.dtype == torch.float32
        if not ok:
            raise TypeError(f"{name}: expected {'uint64 (or int64) packed bits' if kind == 'u64' else 'float32'}, got {x.dtype}")
        if not x.is_contiguous():
            raise ValueError(f"{name}: tensor is not contiguous (strides {tuple(x.stride())}); call .contiguous() first")
        return x.data_ptr(), tuple(x.shape)
    a = _np(x, name, kind)
    return a.ctypes.data, a.shape


def _alloc(shape, dtype, like):
    """A new result buffer of the input's kind: (returned object, pointer)."""
    if _is_torch(like):
        t = torch.empty(shape, dtype={np.uint64: torch.uint64, np.int32: torch.int32, np.float32: torch.float32}[dtype])
        return t, t.data_ptr()
    a = np.empty(shape, dtype=dtype)
    return a, a.ctypes.data


def _ptr(arr: Optional[np.ndarray]) -> Optional[int]:
    return None if arr is None else arr.ctypes.data


def _wrap(arr: np.ndarray, like) -> Array:
    return torch.from_numpy(arr) if _is_torch(like) else arr


def _per_channel(v, n: int, name: str, default: float) -> np.ndarray:
    if v is None:
        return np.full(n, default, dtype=np.float64)
    if _is_torch(v):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} per-channel values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def words(channels: int) -> int:
    """uint64 words that hold `channels` sign bits."""
    return (int(channels) + 63) // 64


# ---- packing -------------------------------------------------------------------------------


def pack_bits(x: Array, bias: Optional[Array] = None) -> Array:
    """Sign bits of ``x + bias`` packed along the last axis: (..., C) float32 -> (..., Cw) uint64."""
    a = _np(x, "x", "f32")
    if a.ndim < 1 or a.shape[-1] < 1:
        raise ValueError(f"x: need a last (channel) axis of size >= 1, got shape {a.shape}")
    c = a.shape[-1]
    b = None
    if bias is not None:
        b = _np(bias, "bias", "f32") if (_is_torch(bias) or isinstance(bias, np.ndarray)) else None
        if b is None or b.shape != (c,):
            raise ValueError(f"bias: expected a float32 vector of {c} values, got {getattr(bias, 'shape', bias)}")
    out = np.empty(a.shape[:-1] + (words(c),), dtype=np.uint64)
    npix = int(np.prod(a.shape[:-1], dtype=np.int64))
    _check(_L().bssl_pack_f32(_ptr(a), npix, c, _ptr(b), _ptr(out)), "pack_bits")
    return _wrap(out, x)


def unpack_bits(p: Array, channels: int) -> Array:
    """Inverse of pack_bits: (..., Cw) uint64 -> (..., C) float32 of +-1."""
    a = _np(p, "packed", "u64")
    if a.ndim < 1 or a.shape[-1] != words(channels):
        raise ValueError(f"packed: last axis must hold {words(channels)} words for {channels} channels, got shape {a.shape}")
    bits = np.unpackbits(a.view(np.uint8).reshape(a.shape[:-1] + (-1,)), axis=-1, bitorder="little")
    out = (1.0 - 2.0 * bits[..., :channels]).astype(np.float32)
    return _wrap(out, p)


def pack_activations(x: Array, bias: Optional[Array] = None) -> Array:
    """NCHW float32 activations -> NHWC packed (N, H, W, Cw), sign of x + bias[c]."""
    if _is_torch(x):
        if x.dim() != 4:
            raise ValueError(f"x: expected NCHW (4-D), got shape {tuple(x.shape)}")
        nhwc = x.detach().permute(0, 2, 3, 1)
        nhwc = nhwc if nhwc.is_contiguous() else nhwc.contiguous()  # free for channels_last input
    else:
        a = np.asarray(x)
        if a.ndim != 4:
            raise ValueError(f"x: expected NCHW (4-D), got shape {a.shape}")
        nhwc = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    return pack_bits(nhwc, bias)


def unpack_activations(p: Array, channels: int) -> Array:
    """NHWC packed -> NCHW float32 of +-1."""
    u = unpack_bits(p, channels)
    return u.permute(0, 3, 1, 2) if _is_torch(u) else u.transpose(0, 3, 1, 2)


def pack_weight_signs(w) -> np.ndarray:
    """Sign bits of weights in the kernels' layout, in numpy (no compiled library needed).

    (O, C, kh, kw) -> (O, kh, kw, Cw) uint64; (O, C) -> (O, Cw). Bit 1 where w < 0, channel c in
    word c // 64 bit c % 64, tail bits 0. The one weight packer: pack_weights, the deploy folding
    and the export's byte layout (a little-endian byte view of these words) all come from here.
    """
    if _is_torch(w):
        w = w.detach().cpu().float().numpy()
    a = np.asarray(w)
    if a.ndim not in (2, 4) or a.shape[1] < 1:
        raise ValueError(f"weights: expected (O, C, kh, kw) or (O, C), got shape {a.shape}")
    neg = (a < 0).transpose(0, 2, 3, 1) if a.ndim == 4 else (a < 0)
    c = neg.shape[-1]
    bits = np.zeros(neg.shape[:-1] + (words(c) * 64,), dtype=np.uint8)
    bits[..., :c] = neg
    # packbits 'little' puts channel c at bit c % 8 of byte c // 8; eight bytes make one word
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def pack_weights(w: Array) -> Array:
    """Sign bits of weights: (O, C, kh, kw) -> (O, kh, kw, Cw); (O, C) -> (O, Cw) (pack_weight_signs)."""
    return _wrap(pack_weight_signs(w), w)


def _block(wbits: np.ndarray) -> np.ndarray:
    o = wbits.shape[0]
    kw_ = int(np.prod(wbits.shape[1:]))
    n = _L().bssl_blocked_weights_words(o, kw_)
    out = np.empty(n, dtype=np.uint64)
    _check(_L().bssl_block_weights(_ptr(np.ascontiguousarray(wbits)), o, kw_, _ptr(out)), "block_weights")
    return out


def threshold_from_affine(scale, shift, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Integer popcount thresholds for ``bit = [scale*dot + shift < 0]`` with dot = K - 2p.

    Returns (thr int32, flip uint8) with ``bit = (p >= thr) ^ flip``, exact in float64.
    """
    scale = np.asarray(scale, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    thr = np.zeros(scale.shape, dtype=np.int64)
    flip = np.zeros(scale.shape, dtype=np.uint8)
    pos, neg, zer = scale > 0, scale < 0, scale == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (k + shift / np.where(scale == 0, 1.0, scale)) / 2.0
    # scale > 0: y < 0  <=>  p > t  <=>  p >= floor(t) + 1
    thr[pos] = np.floor(t[pos]) + 1
    # scale < 0: y < 0  <=>  p < t  <=>  not (p >= ceil(t))
    thr[neg] = np.ceil(t[neg])
    flip[neg] = 1
    # scale == 0: constant bit [shift < 0]; p >= 0 always holds
    thr[zer] = 0
    flip[zer] = (shift[zer] >= 0).astype(np.uint8)
    return np.clip(thr, -1, k + 1).astype(np.int32), flip


# ---- layers --------------------------------------------------------------------------------


class _Transform:
    """Per-output-channel transform arrays for the C call."""

    def __init__(self, out: str, n: int, k: int, scale, shift):
        if out not in OUT_MODES:
            raise ValueError(f"out: unknown output mode {out!r}; use one of {', '.join(OUT_MODES)}")
        self.mode = OUT_MODES[out]
        self.mul = self.add = self.thr = self.flip = None
        if out == "dot":
            if scale is not None or shift is not None:
                raise ValueError("out='dot' returns the raw +-1 dot product; scale/shift need out='float' or 'bits'")
            return
        s = _per_channel(scale, n, "scale", 1.0)
        b = _per_channel(shift, n, "shift", 0.0)
        if out == "float":
            # y = scale*(K - 2p) + shift = (-2 scale) p + (scale K + shift): one fma per output
            self.mul = np.ascontiguousarray((-2.0 * s).astype(np.float32))
            self.add = np.ascontiguousarray((s * k + b).astype(np.float32))
        else:
            self.thr, self.flip = threshold_from_affine(s, b, k)

    def ptrs(self):
        return _ptr(self.mul), _ptr(self.add), _ptr(self.thr), _ptr(self.flip)


def _out_buffer(out, shape, dtype, like):
    """(result to return, numpy view to write): a new array, or the caller's checked buffer."""
    if out is None:
        o = np.empty(shape, dtype=dtype)
        return _wrap(o, like), o
    kind = {np.dtype(np.uint64): "u64", np.dtype(np.float32): "f32"}.get(np.dtype(dtype), "any")
    o = _np(out, "out", kind)
    if o.dtype != np.dtype(dtype):
        raise TypeError(f"out: expected dtype {np.dtype(dtype)}, got {o.dtype}")
    if tuple(o.shape) != tuple(shape):
        raise ValueError(f"out: expected shape {tuple(shape)}, got {tuple(o.shape)}")
    return out, o


def _check_threads(threads) -> int:
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
    return int(threads)


class PackedConv2d:
    """A binary convolution with weights packed once, run through the kernels.

    ``out='dot'``: int32 +-1 dot products; ``'float'``: float32 ``scale*dot + shift`` (alpha and
    BatchNorm folded); ``'bits'``: packed sign bits of ``scale*dot + shift`` (the next layer's
    RSign bias folded into shift), thresholded exactly in integers. Outputs are NHWC.
    """

    def __init__(self, weight_bits: Array, in_channels: int, stride: int = 1, padding: int = 0, *,
                 out: str = "dot", scale=None, shift=None):
        w = _np(weight_bits, "weight_bits", "u64")
        if w.ndim != 4:
            raise ValueError(f"weight_bits: expected (O, kh, kw, Cw), got shape {w.shape}")
        self.out_channels, self.kh, self.kw, cw = (int(v) for v in w.shape)
        self.in_channels = int(in_channels)
        if self.in_channels < 1 or words(self.in_channels) != cw:
            raise ValueError(f"in_channels={in_channels} does not fit weights packed into {cw} words per tap")
        if int(stride) < 1 or int(padding) < 0:
            raise ValueError(f"stride must be >= 1 and padding >= 0, got stride={stride} padding={padding}")
        self.stride, self.padding, self.out_mode = int(stride), int(padding), out
        self.k = self.kh * self.kw * self.in_channels
        self._wblk = _block(w)
        self._t = _Transform(out, self.out_channels, self.k, scale, shift)
        self._wptr, self._tptrs = _ptr(self._wblk), self._t.ptrs()  # fixed for the layer's life

    # raw pointers must follow the arrays through copy.deepcopy and pickle
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_wptr"], state["_tptrs"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._wptr, self._tptrs = _ptr(self._wblk), self._t.ptrs()

    @classmethod
    def from_float(cls, weight: Array, stride: int = 1, padding: int = 0, **kw) -> "PackedConv2d":
        """From float weights (O, C, kh, kw); only their signs are kept."""
        return cls(pack_weights(weight), int(weight.shape[1]), stride, padding, **kw)

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        return ((h + 2 * self.padding - self.kh) // self.stride + 1,
                (w + 2 * self.padding - self.kw) // self.stride + 1)

    def _result(self, n: int, h: int, w: int, like, out):
        ho, wo = self.output_size(h, w)
        if self._t.mode == 2:
            shape, dtype = (n, ho, wo, words(self.out_channels)), np.uint64
        else:
            shape, dtype = (n, ho, wo, self.out_channels), (np.int32 if self._t.mode == 0 else np.float32)
        if out is None:
            return _alloc(shape, dtype, like)
        res, o = _out_buffer(out, shape, dtype, like)
        return res, o.ctypes.data

    def _check_hw(self, h: int, w: int) -> None:
        if h + 2 * self.padding < self.kh or w + 2 * self.padding < self.kw:
            raise ValueError(f"x: spatial size {h}x{w} is smaller than the {self.kh}x{self.kw} kernel with padding {self.padding}")

    def __call__(self, x: Array, threads: int = 1, out: Optional[Array] = None) -> Array:
        """Run on packed NHWC input; `out` may give a preallocated C-contiguous result buffer."""
        ptr, shape = _buf(x, "x", "u64")
        if len(shape) != 4 or shape[3] != words(self.in_channels):
            raise ValueError(
                f"x: expected packed NHWC (N, H, W, {words(self.in_channels)}) for {self.in_channels} channels, got shape {shape}"
            )
        n, h, w_, cw = shape
        self._check_hw(h, w_)
        res, optr = self._result(n, h, w_, x, out)
        rc = _L().bssl_bconv2d(
            ptr, n, h, w_, cw, self._wptr, self.out_channels, self.kh, self.kw, self.stride,
            self.padding, self.k, self._t.mode, *self._tptrs, optr, _check_threads(threads),
        )
        _check(rc, "bconv2d")
        return res

    def apply_float(self, x: Array, bias: Optional[Array] = None, threads: int = 1, out: Optional[Array] = None) -> Array:
        """Run on float32 NHWC input (N, H, W, C): sign bits of x + bias are packed inside the call."""
        ptr, shape = _buf(x, "x", "f32")
        if len(shape) != 4 or shape[3] != self.in_channels:
            raise ValueError(f"x: expected float NHWC (N, H, W, {self.in_channels}), got shape {shape}")
        bptr = None
        if bias is not None:
            bptr, bshape = _buf(bias, "bias", "f32")
            if bshape != (self.in_channels,):
                raise ValueError(f"bias: expected {self.in_channels} values, got shape {bshape}")
        n, h, w_, _ = shape
        self._check_hw(h, w_)
        res, optr = self._result(n, h, w_, x, out)
        rc = _L().bssl_bconv2d_f32(
            ptr, bptr, n, h, w_, self.in_channels, self._wptr, self.out_channels, self.kh, self.kw, self.stride,
            self.padding, self._t.mode, *self._tptrs, optr, _check_threads(threads),
        )
        _check(rc, "bconv2d_f32")
        return res


class PackedLinear:
    """Binary dense layer: (M, Cw) packed rows times (N, Cw) packed weights, modes as PackedConv2d."""

    def __init__(self, weight_bits: Array, in_features: int, *, out: str = "dot", scale=None, shift=None):
        w = _np(weight_bits, "weight_bits", "u64")
        if w.ndim != 2:
            raise ValueError(f"weight_bits: expected (N, Cw), got shape {w.shape}")
        self.out_features, cw = int(w.shape[0]), int(w.shape[1])
        self.in_features = int(in_features)
        if self.in_features < 1 or words(self.in_features) != cw:
            raise ValueError(f"in_features={in_features} does not fit weights packed into {cw} words")
        self._wblk = _block(w)
        self._t = _Transform(out, self.out_features, self.in_features, scale, shift)

    @classmethod
    def from_float(cls, weight: Array, **kw) -> "PackedLinear":
        return cls(pack_weights(weight), int(weight.shape[1]), **kw)

    def __call__(self, x: Array, threads: int = 1) -> Array:
        a = _np(x, "x", "u64")
        if a.ndim != 2 or a.shape[1] != words(self.in_features):
            raise ValueError(f"x: expected packed rows (M, {words(self.in_features)}), got shape {a.shape}")
        m = int(a.shape[0])
        if self._t.mode == 2:
            out = np.empty((m, words(self.out_features)), dtype=np.uint64)
        else:
            out = np.empty((m, self.out_features), dtype=np.int32 if self._t.mode == 0 else np.float32)
        rc = _L().bssl_bgemm(
            _ptr(a), m, words(self.in_features), _ptr(self._wblk), self.out_features, self.in_features,
            self._t.mode, *self._t.ptrs(), _ptr(out), _check_threads(threads),
        )
        _check(rc, "bgemm")
        return _wrap(out, x)


def bconv2d(x: Array, weight_bits: Array, in_channels: int, stride: int = 1, padding: int = 0, *,
            out: str = "dot", scale=None, shift=None, threads: int = 1) -> Array:
    """One-shot binary conv2d on packed NHWC input (packs the weights' blocks each call)."""
    layer = PackedConv2d(weight_bits, in_channels, stride, padding, out=out, scale=scale, shift=shift)
    return layer(x, threads=threads)


def bgemm(x: Array, weight_bits: Array, in_features: int, *, out: str = "dot", scale=None, shift=None,
          threads: int = 1) -> Array:
    """One-shot binary GEMM on packed rows."""
    return PackedLinear(weight_bits, in_features, out=out, scale=scale, shift=shift)(x, threads=threads)
