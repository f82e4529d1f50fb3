import pytest
import torch
import torch.nn.functional as F

from bssl.errors import UserError
from bssl.nn import (BinaryConv2d, BinaryConvBN, RPReLU, RSign, approx_sign, approx_sign_grad, get_stage,
                     hard_sign, set_stage)


def test_hard_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -1e-7, 0.0, 1e-7, 3.0])
    assert hard_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_approx_sign_gradient_is_the_piecewise_formula():
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64, requires_grad=True)
    y = approx_sign(x)
    assert torch.equal(y.detach(), hard_sign(x.detach()))
    y.sum().backward()
    xd = x.detach()
    expected = torch.where((xd >= -1) & (xd < 0), 2 + 2 * xd,
                           torch.where((xd >= 0) & (xd < 1), 2 - 2 * xd, torch.zeros_like(xd)))
    assert torch.allclose(x.grad, expected, atol=1e-12)
    assert torch.allclose(approx_sign_grad(xd), expected, atol=1e-12)
    assert x.grad[xd.abs() > 1].abs().max() == 0


def test_approx_sign_without_grad_is_only_the_hard_sign():
    x = torch.randn(4, 3, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(approx_sign(x), hard_sign(x))


def test_rsign_bias_shape_and_shift():
    s = RSign(3)
    assert s.bias.shape == (3,)
    with torch.no_grad():
        s.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.full((1, 3, 2, 2), -0.5)
    assert s(x)[0, :, 0, 0].tolist() == [-1.0, 1.0, -1.0]


def test_rprelu_is_prelu_at_init_and_shifts():
    act = RPReLU(2)
    x = torch.tensor([-4.0, 2.0]).view(1, 2, 1, 1).repeat(1, 1, 1, 1)
    assert torch.allclose(act(x).flatten(), torch.tensor([-1.0, 2.0]))
    with torch.no_grad():
        act.bias_in.fill_(1.0)
        act.bias_out.fill_(0.5)
    # x + 1 -> [-3, 3] -> prelu [-0.75, 3] -> + 0.5
    assert torch.allclose(act(x).flatten(), torch.tensor([-0.25, 3.5]))


def test_binary_conv_eval_equals_alpha_times_conv_of_signs_exactly():
    torch.manual_seed(0)
    conv = BinaryConv2d(5, 7, 3, stride=1, padding=1).eval()
    x = hard_sign(torch.randn(2, 5, 6, 6))
    w = conv.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3))
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), hard_sign(w)) * alpha.view(1, -1, 1, 1)
    with torch.no_grad():
        out = conv(x)
    assert torch.equal(out, ref)
    # grad-enabled forward gives the same values
    assert torch.equal(conv(x).detach(), ref)


def test_binary_conv_pads_with_pad_value():
    conv = BinaryConv2d(1, 1, 3, padding=1, pad_value=1.0)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    x = -torch.ones(1, 1, 3, 3)
    y = conv(x)
    # corner: 4 inputs of -1 and 5 pads of +1 -> sum of signs = 1, alpha = 0.5
    assert y[0, 0, 0, 0].item() == pytest.approx(0.5)
    assert y[0, 0, 1, 1].item() == pytest.approx(-4.5)
    conv0 = BinaryConv2d(1, 1, 3, padding=1, pad_value=0.0)
    with torch.no_grad():
        conv0.weight.fill_(0.5)
    assert conv0(x)[0, 0, 0, 0].item() == pytest.approx(-2.0)


def test_weight_ste_gradient_masked_to_unit_interval():
    torch.manual_seed(1)
    conv = BinaryConv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(20)  # push many weights outside [-1, 1]
    x = hard_sign(torch.randn(2, 3, 5, 5))
    g = torch.randn(2, 4, 5, 5)
    (conv(x) * g).sum().backward()
    # reference: official HardBinaryConv, gradient of conv(x, alpha*sign(W)) through clamp(W)
    w = conv.weight.detach().clone().requires_grad_(True)
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    clipped = torch.clamp(w, -1, 1)
    wb = (alpha * hard_sign(w.detach())).detach() - clipped.detach() + clipped
    (F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), wb) * g).sum().backward()
    mask = conv.weight.detach().abs() <= 1
    assert (~mask).any() and mask.any()
    assert torch.all(conv.weight.grad[~mask] == 0)
    assert torch.allclose(conv.weight.grad, w.grad, rtol=1e-4, atol=1e-5)


def test_stage1_uses_fp_weights():
    torch.manual_seed(2)
    conv = BinaryConv2d(3, 4, 1, binary_weights=False)
    x = hard_sign(torch.randn(1, 3, 4, 4))
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight))


def test_unit_children_and_stage_switch_keeps_weights():
    torch.manual_seed(3)
    net = torch.nn.Sequential(BinaryConvBN(4, 4, 3), BinaryConvBN(4, 8, 1)).eval()
    assert isinstance(net[0].sign, RSign) and isinstance(net[0].conv, BinaryConv2d)
    assert isinstance(net[0].bn, torch.nn.BatchNorm2d)
    set_stage(net, 1)
    assert get_stage(net) == 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 4, 5, 5)
    y1 = net(x)
    set_stage(net, 2)
    assert get_stage(net) == 2
    after = net.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.allclose(net(x), y1)
    with pytest.raises(UserError):
        set_stage(net, 3)
