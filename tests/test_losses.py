"""BSSL loss functions and schedules against hand-computed values."""

import math

import pytest
import torch

from bssl.distill.losses import (
    bssl_loss, cosine_distance, feature_similarity_fn, kl_distill, l1_distance, l2_distance, symmetrised,
)
from bssl.distill.schedules import lambda_at, lr_factor
from bssl.errors import UserError


def test_kl_direction_and_value():
    T = 0.5
    # teacher logits [0, T ln 3] -> p_t = [1/4, 3/4]; student [0, 0] -> p_s = [1/2, 1/2]
    teacher = torch.tensor([[0.0, T * math.log(3.0)]])
    student = torch.zeros(1, 2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    got = kl_distill(student, teacher, T).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - reverse) > 1e-3  # the teacher is the target distribution, not the student


def test_kl_temperature_scales_logits():
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.zeros(1, 2)
    # at T=2 the teacher's probabilities are softmax([0, ln3 / 2]) = [1, sqrt3] / (1 + sqrt3)
    p1 = 1 / (1 + math.sqrt(3))
    p2 = 1 - p1
    expected = p1 * math.log(p1 / 0.5) + p2 * math.log(p2 / 0.5)
    assert kl_distill(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)
    assert kl_distill(teacher, teacher, 0.2).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_is_batch_mean():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    single = kl_distill(a[:1], t[:1], 1.0).item()
    assert kl_distill(a, t, 1.0).item() == pytest.approx(single / 2, rel=1e-5)
    with pytest.raises(ValueError):
        kl_distill(a, t, 0.0)


def test_cosine_distance_bounds():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert cosine_distance(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    assert cosine_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 5.0]])).item() == pytest.approx(1.0)
    torch.manual_seed(0)
    r = cosine_distance(torch.randn(64, 8), torch.randn(64, 8)).item()
    assert 0.0 <= r <= 2.0


def test_l1_l2_values():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert l1_distance(a, b).item() == pytest.approx((1 + 2 + 3) / 4)
    assert l2_distance(a, b).item() == pytest.approx((1 + 4 + 9) / 4)
    assert feature_similarity_fn("l1") is l1_distance
    with pytest.raises(UserError):
        feature_similarity_fn("hamming")


def test_bssl_loss_balances_terms():
    T = 0.5
    teacher = torch.tensor([[0.0, T * math.log(3.0)]])
    student = torch.zeros(1, 2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    fs_s, fs_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # cosine distance 1
    out = bssl_loss(student, teacher, fs_s, fs_t, lam=0.8, temperature=T, fs="cosine")
    assert out["loss"].item() == pytest.approx(0.2 * kl + 0.8 * 1.0, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-5)
    only_kl = bssl_loss(student, teacher, None, None, lam=0.8, temperature=T, fs=None)
    assert only_kl["loss"].item() == pytest.approx(kl, rel=1e-5)
    with pytest.raises(ValueError):
        bssl_loss(student, teacher, torch.ones(1, 3), torch.ones(1, 2), lam=0.5, temperature=T)


def test_symmetrised_crosses_views():
    seen = []

    def fake(s, t, fs, ft):
        seen.append((s.item(), t.item(), fs.item(), ft.item()))
        return {"loss": s * 10 + t}

    one = torch.tensor(1.0)
    two = torch.tensor(2.0)
    out = symmetrised(fake, [(one, one), (two, two)], [(one * 3, one * 3), (one * 4, one * 4)])
    assert seen == [(1.0, 4.0, 1.0, 4.0), (2.0, 3.0, 2.0, 3.0)]
    assert out["loss"].item() == pytest.approx(0.5 * (14 + 23))


def test_lambda_schedules():
    T = 1000
    assert lambda_at(0, T, "cosine") == pytest.approx(0.9)
    assert lambda_at(T, T, "cosine") == pytest.approx(0.7)
    assert lambda_at(T // 2, T, "cosine") == pytest.approx(0.8)
    assert lambda_at(T // 4, T, "cosine") > lambda_at(3 * T // 4, T, "cosine")
    assert lambda_at(T // 2 - 1, T, "step") == pytest.approx(0.9)
    assert lambda_at(T // 2, T, "step") == pytest.approx(0.7)
    assert lambda_at(0, T, "constant") == lambda_at(T, T, "constant") == pytest.approx(0.7)
    with pytest.raises(UserError):
        lambda_at(0, T, "linear")


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(1e-4)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 100, 0) == pytest.approx(1.0)


def test_infomax_bounds():
    from bssl.distill.losses import infomax

    C = 4
    collapsed_uniform = torch.zeros(8, C)
    collapsed_peaked = torch.tensor([[5.0, 0, 0, 0]] * 8)
    balanced = torch.eye(C).repeat(2, 1) * 100.0
    assert infomax(collapsed_uniform, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert infomax(collapsed_peaked, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert infomax(balanced, 1.0).item() == pytest.approx(-1.0, abs=1e-4)
    torch.manual_seed(0)
    r = infomax(torch.randn(32, C), 0.5).item()
    assert -1.0 <= r <= 0.0
