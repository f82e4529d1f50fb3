"""XNOR-popcount binary convolution for TVM, written in TE and scheduled with s_tir.Schedule.

Three steps in one PrimFunc (the old topi bitserial schedules are gone upstream):
  xb[n, h, w, q]   = 64-bit words of sign bits of x + b, packed along channels, one-padded
                     (border and channel-padding bits 0 = +1);
  acc[n, y, x, o]  = sum over (ky, kx, q) of popcount(xb ^ wt[ky, kx, q, o]);
  out[n, o, y, x]  = scale[o] * (K - 2 acc) + shift[o]    (NCHW float, like the torch graph).
Weights are laid out (k, k, Q, O) so the inner loop over output channels is a contiguous vector
of 64-bit words: one broadcast activation word XOR eight (AVX-512) or two (NEON) weight words,
then a vector popcount (vpopcntq with AVX512-VPOPCNTDQ, cnt.16b + pairwise adds on aarch64,
vcnt.8 on armv7) and an add into the accumulators held in registers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelConfig:
    """Register blocking: `lanes` output channels (vectorised) x up to `xtile` output pixels (unrolled).

    The pixel tile is the largest divisor of the output width <= xtile, so the cap should admit
    7 (ReActNet widths 7/14/28 at 224 px): with xtile=4, 7x7 maps would get a tile of 1 (measured
    12x slower on the 1024-channel 3x3 layer with AVX-512).
    """

    lanes: int = 16
    xtile: int = 8


def _largest_divisor(n: int, cap: int) -> int:
    for d in range(min(cap, n), 0, -1):
        if n % d == 0:
            return d
    return 1


def weight_relayout_te(wbits):
    """(O, k, k, 8Q) uint8 -> (k, k, Q, O) uint64; constant-folded at compile time."""
    from tvm import te, tirx

    o, kh, kw, nbytes = (int(v) for v in wbits.shape)
    q = nbytes // 8
    b = te.reduce_axis((0, 8), name="b")
    return te.compute(
        (kh, kw, q, o),
        lambda ky, kx, qq, oo: te.sum(
            wbits[oo, ky, kx, qq * 8 + b].astype("uint64") << (b.var.astype("uint64") * tirx.const(8, "uint64")),
            axis=b),
        name="wt",
    )


def binary_conv_primfunc(n: int, c: int, h: int, w: int, o: int, kernel: int, stride: int, padding: int,
                         config: KernelConfig = KernelConfig()):
    """A scheduled PrimFunc (x, b, wt, scale, shift) -> out for one layer shape."""
    from tvm import s_tir, te, tirx

    q = (c + 63) // 64
    hp, wp = h + 2 * padding, w + 2 * padding
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    x = te.placeholder((n, c, h, w), "float32", name="x")
    b = te.placeholder((c,), "float32", name="b")
    wt = te.placeholder((kernel, kernel, q, o), "uint64", name="wt")
    scale = te.placeholder((o,), "float32", name="scale")
    shift = te.placeholder((o,), "float32", name="shift")
    j = te.reduce_axis((0, 64), name="j")

    def pack(nn, hh, ww, qq):
        ch = qq * 64 + j
        cc = tirx.min(ch, c - 1)
        yy = tirx.max(tirx.min(hh - padding, h - 1), 0)
        xx = tirx.max(tirx.min(ww - padding, w - 1), 0)
        inside = tirx.all(hh >= padding, hh < h + padding, ww >= padding, ww < w + padding, ch < c)
        negative = x[nn, cc, yy, xx] + b[cc] < tirx.const(0.0, "float32")
        one = tirx.const(1, "uint64") << j.var.astype("uint64")
        return te.sum(tirx.Select(tirx.all(inside, negative), one, tirx.const(0, "uint64")), axis=j)

    xb = te.compute((n, hp, wp, q), pack, name="xb")
    ky = te.reduce_axis((0, kernel), name="ky")
    kx = te.reduce_axis((0, kernel), name="kx")
    rq = te.reduce_axis((0, q), name="rq")
    acc = te.compute(
        (n, oh, ow, o),
        lambda nn, yy, xx, oo: te.sum(
            tirx.popcount(xb[nn, yy * stride + ky, xx * stride + kx, rq] ^ wt[ky, kx, rq, oo]).astype("int32"),
            axis=[ky, kx, rq]),
        name="acc",
    )
    k_total = kernel * kernel * c
    out = te.compute(
        (n, o, oh, ow),
        lambda nn, oo, yy, xx: scale[oo] * (k_total - 2 * acc[nn, yy, xx, oo]).astype("float32") + shift[oo],
        name="out",
    )
    func = te.create_prim_func([x, b, wt, scale, shift, out])

    sch = s_tir.Schedule(func)
    blk = sch.get_sblock("acc")
    ln, ly, lx, lo, lky, lkx, lq = sch.get_loops(blk)
    lo_o, lo_i = sch.split(lo, [None, _largest_divisor(o, config.lanes)])
    lx_o, lx_i = sch.split(lx, [None, _largest_divisor(ow, config.xtile)])
    sch.reorder(ln, ly, lx_o, lo_o, lky, lkx, lq, lx_i, lo_i)
    sch.set_scope(blk, 0, "local")  # accumulators stay in registers
    sch.reverse_compute_at(sch.get_sblock("out"), lo_o)
    sch.unroll(lx_i)
    sch.vectorize(lo_i)
    sch.decompose_reduction(blk, lky)
    # Pack one output row of words before the rows that need it are convolved.
    pk = sch.get_sblock("xb")
    pn, ph, pw, pq, pj = sch.get_loops(pk)
    sch.unroll(pj)
    func = sch.mod["main"]
    # Opaque: keep the default pipeline's FuseOps from merging this scheduled kernel with others.
    return func.with_attr("op_pattern", 8)
