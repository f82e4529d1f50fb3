"""bssl.kernels against the float reference conv2d(pad(sign(x), +1), sign(W)) on every code path."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

K = pytest.importorskip("bssl.kernels")
if not K.available():
    pytest.skip("bssl kernel library not built (pip install -e . --no-build-isolation)", allow_module_level=True)

ISAS = K.supported_isas()


def sgn(t):
    return torch.where(t < 0, -1.0, 1.0)


def ref_conv(x, w, stride, pad, bias=None):
    xb = x if bias is None else x + bias.view(1, -1, 1, 1)
    return F.conv2d(F.pad(sgn(xb), (pad,) * 4, value=1.0), sgn(w), stride=stride)


# (n, c, h, w, o, k, stride, pad): channel tails, odd sizes, stride 2, batch > 1, 1x1 and 3x3
SHAPES = [
    (2, 1, 5, 7, 3, 3, 1, 1),
    (1, 31, 9, 6, 33, 3, 2, 1),
    (2, 64, 7, 7, 32, 3, 1, 1),
    (1, 65, 6, 9, 70, 1, 1, 0),
    (2, 130, 5, 5, 17, 3, 2, 1),
    (1, 100, 8, 8, 64, 1, 2, 0),
    (1, 40, 4, 4, 5, 3, 1, 0),
    (3, 200, 3, 3, 96, 3, 1, 1),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}h{}w{}o{}k{}s{}p{}".format(*s))
def test_conv_all_modes_match_float_reference(isa, shape):
    n, c, h, w, o, k, stride, pad = shape
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    x = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(o, c, k, k, generator=g)
    bias = 0.3 * torch.randn(c, generator=g)
    ref = ref_conv(x, wt, stride, pad, bias).permute(0, 2, 3, 1)  # NHWC
    scale = torch.randn(o, generator=g).double()
    scale[0] = 0.0  # a dead channel: constant output
    shift = (torch.randn(o, generator=g) * 5).double()
    with K.use_isa(isa):
        xp = K.pack_activations(x, bias)
        wp = K.pack_weights(wt)
        dot = K.bconv2d(xp, wp, c, stride, pad, out="dot")
        assert dot.dtype == torch.int32 and dot.shape == ref.shape
        assert torch.equal(dot.float(), ref)
        y = K.bconv2d(xp, wp, c, stride, pad, out="float", scale=scale, shift=shift)
        want = scale * ref.double() + shift
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-4)
        # float NHWC input packed inside the call gives the same result
        layer = K.PackedConv2d(wp, c, stride, pad, out="float", scale=scale, shift=shift)
        assert torch.equal(layer.apply_float(x.permute(0, 2, 3, 1).contiguous(), bias), y)
        bits = K.bconv2d(xp, wp, c, stride, pad, out="bits", scale=scale, shift=shift)
        assert bits.dtype == torch.uint64 and bits.shape[-1] == K.words(o)
        # bit-exact: packed sign bits of the exact affine output, channel tail bits zero
        assert torch.equal(bits, K.pack_bits((want < 0).float().neg().contiguous()))
        assert torch.equal(K.unpack_bits(bits, o), torch.where(want < 0, -1.0, 1.0).float())


@pytest.fixture
def split_every_call():
    """Make even tiny test layers use every thread asked for."""
    old = K.thread_min_work()
    K.thread_min_work(0)
    yield
    K.thread_min_work(old)


@pytest.mark.parametrize("isa", ISAS)
def test_threads_and_torch_numpy_agree(isa, split_every_call):
    g = torch.Generator().manual_seed(3)
    x, wt = torch.randn(2, 96, 11, 9, generator=g), torch.randn(40, 96, 3, 3, generator=g)
    with K.use_isa(isa):
        layer = K.PackedConv2d.from_float(wt, 2, 1, out="float", scale=torch.rand(40), shift=torch.randn(40))
        xp = K.pack_activations(x)
        one = layer(xp, threads=1)
        for t in (2, 3, 64):
            assert torch.equal(layer(xp, threads=t), one)
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()
        assert torch.equal(layer.apply_float(x_nhwc, threads=2), one)
        assert np.array_equal(layer.apply_float(x_nhwc.numpy()), one.numpy())
        out_np = layer(xp.numpy(), threads=2)
        assert isinstance(out_np, np.ndarray) and np.array_equal(out_np, one.numpy())
        # int64 views of the packed words are accepted as well
        assert torch.equal(layer(xp.view(torch.int64)), one)
        buf = torch.full_like(one, float("nan"))
        assert layer(xp, out=buf) is buf and torch.equal(buf, one)
        with pytest.raises(ValueError, match="shape"):
            layer(xp, out=torch.empty(1, 2, 3, 4))
        with pytest.raises(TypeError, match="float32"):
            layer(xp, out=torch.empty(one.shape, dtype=torch.float64))


@pytest.mark.parametrize("isa", ISAS)
def test_bgemm_matches_matmul(isa, split_every_call):
    g = torch.Generator().manual_seed(4)
    a, w = torch.randn(37, 150, generator=g), torch.randn(45, 150, generator=g)
    ref = sgn(a) @ sgn(w).T
    with K.use_isa(isa):
        dot = K.bgemm(K.pack_bits(a), K.pack_weights(w), 150, threads=2)
        assert torch.equal(dot.float(), ref)
        y = K.PackedLinear.from_float(w, out="float", scale=0.5, shift=1.0)(K.pack_bits(a))
        torch.testing.assert_close(y, 0.5 * ref + 1.0)


def test_pack_bits_layout():
    x = torch.zeros(2, 70)
    x[0, 0] = -1.0  # bit 0 of word 0
    x[0, 69] = -2.0  # bit 5 of word 1
    x[1, 3] = 0.0  # sign(0) = +1 -> bit 0
    x[1, 64] = -0.5
    p = K.pack_bits(x)
    assert p.dtype == torch.uint64 and p.shape == (2, 2)
    assert p.view(torch.int64).tolist() == [[1, 1 << 5], [0, 1]]
    for isa in ISAS:
        with K.use_isa(isa):
            r = torch.randn(5, 3, 4, 133)
            b = torch.randn(133)
            p = K.pack_bits(r, b)
            assert torch.equal(K.unpack_bits(p, 133), sgn(r + b))
            assert torch.equal(K.unpack_activations(K.pack_activations(r.permute(0, 3, 1, 2)), 133), sgn(r).permute(0, 3, 1, 2))


def test_threshold_from_affine_is_exact():
    k = 27
    dots = np.arange(-k, k + 1, 2)  # every reachable dot, p = (K - dot) / 2
    rng = np.random.default_rng(0)
    scale = np.concatenate([rng.normal(size=50), [0.0, 0.0, 1.0, -1.0]])
    shift = np.concatenate([rng.normal(size=50) * 10, [1.0, -1.0, -3.0, 3.0]])  # exact ties at dot=3
    thr, flip = K.threshold_from_affine(scale, shift, k)
    for o in range(len(scale)):
        p = (k - dots) // 2
        got = (p >= thr[o]) ^ bool(flip[o])
        assert np.array_equal(got, scale[o] * dots + shift[o] < 0), o


def test_bad_input_raises_clear_errors():
    wt = torch.randn(8, 70, 3, 3)
    layer = K.PackedConv2d.from_float(wt, 1, 1)
    xp = K.pack_activations(torch.randn(1, 70, 6, 6))
    with pytest.raises(ValueError, match="expected packed NHWC"):
        layer(K.pack_activations(torch.randn(1, 130, 6, 6)))  # 3 words, layer wants 2
    with pytest.raises(ValueError, match="not contiguous"):
        layer(xp.transpose(1, 2))
    with pytest.raises(TypeError, match="uint64"):
        layer(xp.view(torch.float64))
    with pytest.raises(TypeError, match="float32"):
        K.pack_bits(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        layer([[1, 2]])
    with pytest.raises(ValueError, match="threads"):
        layer(xp, threads=0)
    with pytest.raises(ValueError, match="smaller than"):
        K.PackedConv2d.from_float(torch.randn(4, 70, 3, 3), 1, 0)(K.pack_activations(torch.randn(1, 70, 2, 5)))
    with pytest.raises(ValueError, match="in_channels"):
        K.PackedConv2d(K.pack_weights(wt), 200)
    with pytest.raises(ValueError, match="output mode"):
        K.PackedConv2d.from_float(wt, out="int8")
    with pytest.raises(ValueError, match="per-channel"):
        K.PackedConv2d.from_float(wt, out="float", scale=torch.ones(7))
    with pytest.raises(ValueError, match="bias"):
        K.pack_bits(torch.randn(2, 5), torch.randn(4))
    with pytest.raises(ValueError, match="float NHWC"):
        layer.apply_float(torch.randn(1, 6, 6, 71))
    with pytest.raises(TypeError, match="float32"):
        layer.apply_float(torch.randn(1, 6, 6, 70, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias"):
        layer.apply_float(torch.randn(1, 6, 6, 70), torch.randn(3))
    with pytest.raises(ValueError, match="unknown kernel path"):
        K.set_isa("sse9")


def test_peak_loop_counts_work():
    ops, _ = K.peak_xor_popcount(1000)
    assert ops >= 1000 * 64


FORK_SCRIPT = """
import os, sys, torch, bssl.kernels as K
K.thread_min_work(0)
layer = K.PackedConv2d.from_float(torch.randn(64, 64, 3, 3), 1, 1, out="float")
x = torch.randn(2, 9, 9, 64)
ref = layer.apply_float(x, threads=3)  # starts the worker pool
pid = os.fork()
if pid == 0:  # the child has no pool threads; it must make its own, not wait on the parent's
    os._exit(0 if torch.equal(layer.apply_float(x, threads=3), ref) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_thread_pool_survives_fork():
    r = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_env_override_forces_path_and_rejects_bad_names():
    r = _py("import bssl.kernels as K; print(K.get_isa())", BSSL_KERNELS_ISA="scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"
    r = _py("import bssl.kernels as K; print(K.get_isa())", BSSL_KERNELS_ISA="quantum")
    assert r.returncode != 0 and "unknown kernel path 'quantum'" in r.stderr
