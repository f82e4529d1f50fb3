"""bssl.deploy.fold: the one folding of a BinaryConvBN, the one weight packer, and its consumers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bssl.deploy.fold import FoldedUnit, fold_student, fold_unit, pack_weight_signs
from bssl.errors import UserError
from bssl.models import build_model
from bssl.nn import BinaryConvBN, RPReLU, set_stage
from conftest import kernels_built, needs_kernels, trained_looking


def _reference(f: FoldedUnit, x: torch.Tensor) -> torch.Tensor:
    """scale * conv(one-padded sign(x + b), sign(W)) + shift (+ the padding correction), in float64."""
    s = torch.where(x + torch.tensor(f.rsign_bias).view(1, -1, 1, 1) < 0, -1.0, 1.0).double()
    s = F.pad(s, [f.padding] * 4, value=1.0)
    dot = F.conv2d(s, torch.tensor(f.weight_signs()).double(), stride=f.stride)
    assert torch.equal(dot, dot.round()) and dot.abs().max() <= f.K  # an exact +-1 dot product
    y = dot * torch.tensor(f.scale).double().view(1, -1, 1, 1) + torch.tensor(f.shift).double().view(1, -1, 1, 1)
    corr = f.padding_correction(x.shape[2], x.shape[3])
    return (y + torch.tensor(corr).double().unsqueeze(0)).float()


@pytest.mark.parametrize("pad_value", [1.0, 0.0])
@pytest.mark.parametrize("cin,cout,k,stride", [(70, 24, 3, 1), (64, 16, 3, 2), (130, 20, 1, 1), (5, 7, 3, 2)])
def test_folded_unit_reproduces_the_unit(cin, cout, k, stride, pad_value):
    torch.manual_seed(cin + k + stride)
    unit = trained_looking(BinaryConvBN(cin, cout, k, stride=stride, pad_value=pad_value))
    f = fold_unit(unit, "u")
    assert (f.in_channels, f.out_channels, f.kernel_size, f.stride, f.padding, f.pad_value) == \
        (cin, cout, k, stride, k // 2, pad_value)
    assert f.weight_bits.dtype == np.uint64 and f.weight_bits.shape == (cout, k, k, (cin + 63) // 64)
    assert f.scale.dtype == f.shift.dtype == f.rsign_bias.dtype == np.float32 and f.K == k * k * cin
    assert not f.weight_bits.flags.writeable  # frozen
    w = unit.conv.weight.detach()
    assert np.array_equal(f.weight_signs(), torch.where(w < 0, -1.0, 1.0).numpy())
    assert f.needs_correction == (pad_value != 1.0 and k > 1)
    for hw in ((9, 9), (8, 11)):
        x = torch.randn(3, cin, *hw)
        x[0, :, 0, 0] = -unit.sign.bias.detach()  # x + b == 0 exactly: sign(0) = +1
        with torch.no_grad():
            want = unit(x)
        got = _reference(f, x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_folded_unit_numbers_are_the_float64_fold():
    torch.manual_seed(3)
    unit = trained_looking(BinaryConvBN(33, 9, 3))
    f = fold_unit(unit, "u", extra_shift=torch.arange(9.0))
    bn, w = unit.bn, unit.conv.weight.detach().double()
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    inv = (bn.running_var.double() + bn.eps).rsqrt()
    scale = gamma * w.abs().mean(dim=(1, 2, 3)) * inv
    shift = beta - gamma * bn.running_mean.double() * inv + torch.arange(9.0).double()
    assert np.array_equal(f.scale, scale.float().numpy()) and np.array_equal(f.shift, shift.float().numpy())


def test_fold_unit_refuses_what_has_no_packed_form():
    unit = BinaryConvBN(8, 8, 3, binary_weights=False)
    with pytest.raises(UserError, match="stage-1"):
        fold_unit(unit, "u")
    unit = BinaryConvBN(8, 8, 3)
    unit.bn = nn.BatchNorm2d(8, track_running_stats=False)
    with pytest.raises(UserError, match="running statistics"):
        fold_unit(unit, "u")
    unit = BinaryConvBN(8, 8, 3)
    unit.conv.dilation = (2, 2)
    with pytest.raises(UserError, match="dilated"):
        fold_unit(unit, "u")
    unit = BinaryConvBN(8, 8, 3)
    unit.conv.stride = (1, 2)
    with pytest.raises(UserError, match="square stride"):
        fold_unit(unit, "u")
    with pytest.raises(UserError, match="no bssl.nn.BinaryConvBN"):
        fold_student(nn.Sequential(nn.Conv2d(3, 4, 3)))


# ---------------------------------------------------------------- one packer

@pytest.mark.parametrize("cin", [1, 5, 63, 64, 65, 130])
def test_packers_agree_bit_for_bit(cin):
    from bssl.export import ops

    g = torch.Generator().manual_seed(cin)
    w = torch.randn(7, cin, 3, 3, generator=g)
    w[0, 0, 0, 0], w[1, -1, 2, 2] = 0.0, -0.0  # zeros are +1 (bit 0) everywhere
    words = pack_weight_signs(w)
    assert words.dtype == np.uint64 and words.shape == (7, 3, 3, (cin + 63) // 64)
    assert np.array_equal(pack_weight_signs(w.numpy()), words)
    # the export's bytes are the little-endian bytes of the same words
    b = ops.pack_signs(torch.where(w < 0, -1.0, 1.0))
    assert b.dtype == torch.uint8 and b.shape == (7, 3, 3, ops.packed_bytes(cin))
    assert np.array_equal(b.numpy(), words.astype("<u8").view(np.uint8))
    assert np.array_equal(b.numpy().view("<u8").astype(np.uint64), words)
    assert torch.equal(ops.unpack_signs(b, cin), torch.where(w < 0, -1.0, 1.0))
    # channel tail bits stay 0 (+1)
    if cin % 64:
        assert not np.any(words[..., -1] >> np.uint64(cin % 64))
    if kernels_built():
        from bssl import kernels as K

        assert np.array_equal(K.pack_weights(w).numpy(), words)
        # the C activation packer writes the same layout for the same signs
        assert np.array_equal(K.pack_bits(np.ascontiguousarray(w.numpy().transpose(0, 2, 3, 1))), words)


def test_dense_weights_pack_too():
    w = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
    words = pack_weight_signs(w)
    assert words.shape == (5, 2)
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), axis=-1, bitorder="little")[:, :100]
    assert np.array_equal(bits.astype(bool), w < 0)


# ---------------------------------------------------------------- whole students

STUDENTS = ["reactnet-a", "birealnet-18", "reactnet-18"]


def _student(name, pad_value=1.0, seed=0):
    torch.manual_seed(seed)
    m = build_model(name, num_classes=10, input_size=32, width=0.25, stem="small", pad_value=pad_value)
    return trained_looking(m)


@pytest.mark.parametrize("name", STUDENTS)
def test_fold_student_covers_every_unit_once(name):
    m = _student(name)
    folded = fold_student(m)
    units = [n for n, u in m.named_modules() if isinstance(u, BinaryConvBN)]
    assert list(folded.units) == units and len(folded) == len(units) > 0
    assert [f.name for f in folded] == units
    rprelus = {n: a for n, a in m.named_modules() if isinstance(a, RPReLU)}
    # ReActNet-A and ReActNet-18: every RPReLU directly follows units; Bi-Real-18 has none
    assert set(folded.absorbed) == set(rprelus)
    claimed = [u for us in folded.absorbed.values() for u in us]
    assert len(claimed) == len(set(claimed)) and set(claimed) <= set(units)
    for act_name, us in folded.absorbed.items():
        bias = rprelus[act_name].bias_in.detach().double().numpy()
        start = 0
        for u in us:
            plain = fold_unit(m.get_submodule(u), u)
            n = plain.out_channels
            assert np.allclose(folded[u].shift.astype(np.float64),
                               plain.shift.astype(np.float64) + bias[start:start + n], atol=1e-6)
            assert np.array_equal(folded[u].scale, plain.scale)
            start += n
        assert start == bias.shape[0]
    for u in set(units) - set(claimed):
        assert np.array_equal(folded[u].shift, fold_unit(m.get_submodule(u), u).shift)


def test_fold_student_refuses_stage1():
    m = _student("reactnet-a")
    set_stage(m, 1)
    with pytest.raises(UserError, match="stage-1"):
        fold_student(m)


@needs_kernels
@pytest.mark.parametrize("name", STUDENTS)
def test_zero_padded_student_packs_and_matches(name):
    from bssl.deploy import PackedBinaryConvBN, pack

    m = _student(name, pad_value=0.0, seed=2)
    assert all(u.conv.pad_value == 0.0 for u in m.modules() if isinstance(u, BinaryConvBN))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    pk = pack(m)
    assert any(u.folded.needs_correction for u in pk.modules() if isinstance(u, PackedBinaryConvBN))
    torch.testing.assert_close(pk(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # a second input size gets its own correction map
    x2 = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref2 = m(x2)
    torch.testing.assert_close(pk(x2), ref2, rtol=1e-4, atol=1e-4 * ref2.abs().max().item())


# ---------------------------------------------------------------- consumers read the same numbers

def _same(a: FoldedUnit, b: FoldedUnit) -> bool:
    geom = ("name", "in_channels", "out_channels", "kernel_size", "stride", "padding", "pad_value")
    arrays = ("rsign_bias", "weight_bits", "scale", "shift")
    return all(getattr(a, k) == getattr(b, k) for k in geom) and all(
        np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays)


def test_export_carries_exactly_the_folded_numbers():
    from bssl.export import fold as efold

    m = _student("reactnet-a", seed=4)
    folded = fold_student(m, absorb_rprelu=False)  # op-by-op graphs keep the RPReLU input biases
    assert not folded.absorbed
    packed = efold.load_student_model(m)
    efold._replace_units(packed, packed=True)
    mods = {n: mod for n, mod in packed.named_modules() if isinstance(mod, efold.PackedBinaryConv)}
    assert set(mods) == set(folded.units)
    for n, mod in mods.items():
        f = folded[n]
        assert np.array_equal(mod.wbits.numpy(), f.weight_bytes())
        assert np.array_equal(mod.scale.numpy(), f.scale) and np.array_equal(mod.shift.numpy(), f.shift)
        assert np.array_equal(mod.bias.numpy(), f.rsign_bias)
    assert all(isinstance(packed.get_submodule(a), RPReLU) for a in fold_student(m).absorbed)
    # the standard-op form uses the same scale and signs
    std = efold.load_student_model(m)
    efold._replace_units(std, packed=False)
    for n, f in folded.units.items():
        mod = std.get_submodule(n)
        assert np.array_equal(mod.weight.numpy(), f.weight_signs() * f.scale.reshape(-1, 1, 1, 1))
        assert np.array_equal(mod.shift.numpy(), f.shift)


def test_zero_padded_student_exports_to_standard_onnx_form_only():
    from bssl.export import fold as efold

    m = _student("reactnet-18", pad_value=0.0, seed=5)
    x = efold.check_inputs(4, 32)
    ref, _ = efold.reference_outputs(m, x)
    with torch.no_grad():
        got, _ = efold.deploy_model(m, packed=False)(x)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(UserError, match="one-padding only"):
        efold.deploy_model(m, packed=True)


@needs_kernels
def test_packed_artifact_stores_the_folded_student(tmp_path):
    from bssl.bench.packed_artifact import FORMAT, folded_from_payload, load_packed, packed_format, save_packed
    from bssl.deploy import PackedBinaryConvBN

    m = _student("reactnet-18", pad_value=0.0, seed=6)
    path = tmp_path / "m.packed.pt"
    save_packed(m, path)
    assert packed_format(path) == FORMAT
    folded = fold_student(m)
    stored = folded_from_payload(torch.load(path, weights_only=True))
    assert list(stored.units) == list(folded.units) and dict(stored.absorbed) == dict(folded.absorbed)
    assert all(_same(stored[n], folded[n]) for n in folded.units)
    pk = load_packed(path)
    loaded = {n: u.folded for n, u in pk.named_modules() if isinstance(u, PackedBinaryConvBN)}
    assert all(_same(loaded[n], folded[n]) for n in folded.units)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(pk(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_old_packed_artifact_format_is_refused(tmp_path):
    from bssl.bench.packed_artifact import load_packed, packed_format

    path = tmp_path / "old.packed.pt"
    torch.save({"format": "bssl-packed-student/1", "spec": {}, "fp_state": {}, "units": {}}, path)
    assert packed_format(path) == "bssl-packed-student/1"
    with pytest.raises(UserError, match="older format"):
        load_packed(path)
    (tmp_path / "junk.pt").write_text("not a torch file")
    assert packed_format(tmp_path / "junk.pt") is None
    with pytest.raises(UserError, match="not a packed bssl student"):
        load_packed(tmp_path / "junk.pt")


def test_folded_unit_copies_stay_frozen():
    import copy
    import pickle

    torch.manual_seed(7)
    f = fold_unit(trained_looking(BinaryConvBN(70, 8, 3, pad_value=0.0)), "u")
    for g in (copy.deepcopy(f), pickle.loads(pickle.dumps(f))):
        assert not g.weight_bits.flags.writeable and not g.shift.flags.writeable
        assert _same(g, f) and np.array_equal(g.padding_correction(6, 6), f.padding_correction(6, 6))
    with pytest.raises(ValueError, match="tail bits"):
        FoldedUnit("u", 70, 8, 3, 1, 1, 1.0, f.rsign_bias, f.weight_bits | np.uint64(1 << 63), f.scale, f.shift)
    with pytest.raises(ValueError, match="shape"):
        FoldedUnit("u", 70, 8, 3, 1, 1, 1.0, f.rsign_bias, f.weight_bits, f.scale[:4], f.shift)


def test_lce_graph_carries_the_folded_numbers():
    from bssl.export import lce

    m = _student("reactnet-a", seed=8)
    folded = list(fold_student(m, absorb_rprelu=False))  # an op-by-op graph, as every export
    spec, arrays = lce.graph_spec(m, 32)
    bconvs = [op for op in spec["ops"] if op["op"] == "bconv"]
    assert len(bconvs) == len(folded)
    for op, f in zip(bconvs, folded):  # graph order is module order in these students
        assert (op["kernel_size"], op["stride"], op["padding"]) == (f.kernel_size, f.stride, f.padding)
        assert np.array_equal(arrays[op["kernel"]], f.weight_signs().transpose(2, 3, 1, 0))
        for key, want in (("scale", f.scale), ("shift", f.shift), ("bias", f.rsign_bias)):
            assert np.array_equal(arrays[op[key]], want), (f.name, key)
