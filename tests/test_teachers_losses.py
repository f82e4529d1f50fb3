"""Pure loss functions of the teachers on hand-made inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from bssl.teachers import losses as L

E = torch.eye(4)


def test_info_nce_hand_computed():
    q = E[0:1]
    k = E[0:1]
    queue = E[1:2]
    # logits [1, 0] / T with T = 1: -log(e / (e + 1))
    assert L.info_nce(q, k, queue, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # lower temperature sharpens the positive: loss falls
    assert L.info_nce(q, k, queue, 0.2).item() < L.info_nce(q, k, queue, 1.0).item()
    # a negative identical to the positive makes it a coin flip
    assert L.info_nce(q, k, E[0:1], 1.0).item() == pytest.approx(math.log(2), abs=1e-6)


def test_nt_xent_hand_computed():
    # 2 images x 2 views, T = 1; view 2 of image 0 equals view 1, image 1 is orthogonal
    z1 = torch.stack([E[0], E[1]])
    z2 = torch.stack([E[0], E[1]])
    # each anchor: positive sim 1, negatives 0 and 0 -> -log(e / (e + 2))
    expected = -math.log(math.e / (math.e + 2))
    assert L.nt_xent([z1, z2], 1.0).item() == pytest.approx(expected, abs=1e-6)
    # scale-free (embeddings are normalised inside) and symmetric in the views
    assert L.nt_xent([3 * z1, z2], 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert L.nt_xent([z2, z1], 0.5).item() == pytest.approx(L.nt_xent([z1, z2], 0.5).item(), abs=1e-6)
    # a negative equal to the anchor's positive makes two candidates tie: -log(e / (2e + 1))
    tied = torch.stack([E[0], E[0]])
    assert L.nt_xent([tied, tied], 1.0).item() == pytest.approx(-math.log(math.e / (3 * math.e)), abs=1e-6)
    # K = 3 views: two positives per anchor, averaged
    three = L.nt_xent([z1, z2, z1], 1.0).item()
    assert three == pytest.approx(-math.log(math.e / (2 * math.e + 3)), abs=1e-6)


def test_negative_cosine_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z = torch.tensor([[0.0, 3.0]], requires_grad=True)
    assert L.negative_cosine(p, z).item() == pytest.approx(0.0, abs=1e-7)
    assert L.negative_cosine(p, p * 5).item() == pytest.approx(-1.0, abs=1e-6)
    L.negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None


def test_byol_regression_range():
    a = torch.tensor([[1.0, 0.0]])
    assert L.byol_regression(a, 2 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert L.byol_regression(a, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.0)
    assert L.byol_regression(a, -a).item() == pytest.approx(4.0)


def test_byol_tau_cosine_schedule():
    assert L.byol_tau(0, 100, 0.996) == pytest.approx(0.996)
    assert L.byol_tau(100, 100, 0.996) == pytest.approx(1.0)
    assert L.byol_tau(50, 100, 0.996) == pytest.approx(1 - 0.004 / 2)
    taus = [L.byol_tau(k, 100, 0.99) for k in range(101)]
    assert all(b >= a for a, b in zip(taus, taus[1:]))


def test_pairwise_two_views_is_symmetrised_loss():
    torch.manual_seed(0)
    p1, p2, z1, z2 = torch.randn(4, 8, 16).unbind(0)
    got = L.pairwise_views_loss([p1, p2], [z1, z2], L.negative_cosine)
    want = 0.5 * (L.negative_cosine(p1, z2) + L.negative_cosine(p2, z1))
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    # K views: mean over the K(K-1) ordered pairs
    ps, zs = list(torch.randn(3, 8, 16)), list(torch.randn(3, 8, 16))
    pairs = [L.negative_cosine(ps[i], zs[j]) for i in range(3) for j in range(3) if i != j]
    assert L.pairwise_views_loss(ps, zs, L.negative_cosine).item() == pytest.approx(torch.stack(pairs).mean().item(), abs=1e-6)


def test_ensiam_target_is_stopgrad_mean():
    z1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 1.0]], requires_grad=True)
    target = L.ensiam_target([z1, z2])
    assert torch.equal(target, torch.tensor([[0.5, 0.5]]))
    assert not target.requires_grad
    # p_1 = e1, p_2 = e1: both at 45 degrees from the (0.5, 0.5) target
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = L.ensiam_loss([p, p], [z1, z2])
    assert loss.item() == pytest.approx(-1 / math.sqrt(2), abs=1e-6)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p.grad is not None


def test_ensiam_differs_from_pairwise_kaug():
    z = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])]
    p = [torch.tensor([[1.0, 0.0]])] * 3
    ens = L.ensiam_loss(p, z).item()
    pair = L.pairwise_views_loss(p, z, L.negative_cosine).item()
    assert ens != pytest.approx(pair)


def test_fuzzy_labels_hard_and_soft():
    votes = torch.tensor([[1, 1, 2], [0, 1, 2], [3, 3, 3]])
    labels, hard = L.fuzzy_labels(votes, 4)
    assert hard.tolist() == [True, False, True]
    assert torch.allclose(labels[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(labels[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    assert torch.allclose(labels[2], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(labels.sum(1), torch.ones(3))
    soft, hard_s = L.fuzzy_labels(votes, 4, soft_only=True)
    assert not hard_s.any()
    assert torch.allclose(soft[0], torch.tensor([0.0, 2 / 3, 1 / 3, 0.0]))


def test_fuzzy_labels_tie_is_not_a_majority():
    labels, hard = L.fuzzy_labels(torch.tensor([[0, 0, 1, 1]]), 2)
    assert not hard.item()
    assert torch.allclose(labels, torch.tensor([[0.5, 0.5]]))


def test_pseudo_label_error_picks_the_consistent_block():
    votes = torch.tensor([[1, 1, 2], [0, 1, 2], [3, 3, 3]])
    labels, _ = L.fuzzy_labels(votes, 4)
    err = L.pseudo_label_error(votes, labels)
    assert err.tolist() == pytest.approx([2 / 9, 2 / 9, 5 / 9])
    assert int(err.argmin()) in (0, 1)


def test_soft_cross_entropy_matches_hard_ce():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    y = torch.tensor([0, 3, 6, 2, 2])
    assert L.soft_cross_entropy(logits, F.one_hot(y, 7).float()).item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
