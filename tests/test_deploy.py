"""bssl.deploy.pack: packed inference through the kernels matches the student in eval mode."""

import pytest
import torch
from torch import nn

from bssl.errors import UserError

K = pytest.importorskip("bssl.kernels")
if not K.available():
    pytest.skip("bssl kernel library not built (pip install -e . --no-build-isolation)", allow_module_level=True)

from bssl.deploy import PackedBinaryConvBN, pack, set_threads  # noqa: E402
from bssl.models import build_model  # noqa: E402
from bssl.nn import BinaryConvBN, RPReLU, set_stage  # noqa: E402
from conftest import trained_looking  # noqa: E402


def _student(name="reactnet-a", pad_value=1.0, seed=0):
    torch.manual_seed(seed)
    return trained_looking(build_model(name, num_classes=10, input_size=32, width=0.25, pad_value=pad_value))


@pytest.mark.parametrize("pad_value", [1.0, 0.0])
def test_pack_matches_eval_model(pad_value):
    m = _student(pad_value=pad_value)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref, feat = m(x), m.features(x)
    pk = pack(m)
    n_units = sum(isinstance(u, BinaryConvBN) for u in m.modules())
    assert n_units > 0 and sum(isinstance(u, PackedBinaryConvBN) for u in pk.modules()) == n_units
    assert not any(isinstance(u, BinaryConvBN) for u in pk.modules())
    # every RPReLU's input bias rode into the units before it (ReActNet-A: all of them)
    assert not any(isinstance(u, RPReLU) for u in pk.modules())
    torch.testing.assert_close(pk(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    torch.testing.assert_close(pk.features(x), feat, rtol=1e-4, atol=1e-4 * feat.abs().max().item())
    # the original model is untouched and threads do not change the result
    assert any(isinstance(u, BinaryConvBN) for u in m.modules())
    set_threads(pk, 2)
    torch.testing.assert_close(pk(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("name", ["birealnet-18", "reactnet-b"])
def test_pack_other_students(name):
    m = _student(name, seed=1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(pack(m)(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_pack_refuses_what_it_cannot_run():
    m = _student()
    set_stage(m, 1)
    with pytest.raises(UserError, match="stage 1"):
        pack(m)
    with pytest.raises(UserError, match="no bssl.nn.BinaryConvBN"):
        pack(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(UserError, match="threads"):
        pack(_student(), threads=0)
    pk = pack(_student())
    with pytest.raises(ValueError, match="channels"):
        pk.blocks[0].unit3x3(torch.randn(1, 5, 8, 8))
