"""Each teacher method on a tiny batch: loss, gradients, momentum targets, queue, FUSSL phases."""

import pytest
import torch

from bssl.errors import UserError
from bssl.teachers import METHODS, build_backbone, method_config
from bssl.teachers.fussl import FUSSL

SMALL = {"proj_hidden": 32, "proj_dim": 16, "queue_size": 12, "pred_hidden": 8}


def make(name, **over):
    torch.manual_seed(0)
    cfg = method_config(name, {**SMALL, **over})
    return METHODS.get(name)(build_backbone("resnet18", small_stem=False), cfg)


def views_for(method, n=4, size=16):
    torch.manual_seed(1)
    return [torch.randn(n, 3, size, size) for _ in range(len(method.views(size)))]


@pytest.mark.parametrize("name", ["mocov2", "byol", "simsiam", "simsiam-kaug", "ensiam", "simclr"])
def test_method_step_trains_backbone(name):
    m = make(name)
    m.train()
    views = views_for(m)
    loss, logs = m(views, torch.arange(4))
    assert torch.isfinite(loss)
    loss.backward()
    assert m.backbone.conv1.weight.grad is not None and m.backbone.conv1.weight.grad.abs().sum() > 0
    assert set(m.heads()) >= {"projector"}
    assert m.encoder is m.backbone
    assert m.encoder(views[0]).shape == (4, 512)



def test_view_counts_follow_the_paper():
    assert len(make("mocov2").views(32)) == 2
    assert len(make("ensiam").views(32)) == 4  # EnSiam's default K
    assert len(make("simsiam-kaug", num_views=3).views(32)) == 3
    assert len(make("simsiam", multicrop_local=2).views(32)) == 4
    assert len(make("simclr").views(32)) == 2


def test_hue_and_blur_keys_reach_every_view():
    views = make("simsiam", multicrop_local=1, hue=0.5, blur=False).views(32).transforms
    for view in views:
        jitter = view.transforms[1].transforms[0]
        assert jitter.hue == (-0.5, 0.5)
        assert view.transforms[3].p == 0.0  # the blur's RandomApply
    paper = make("simsiam").views(32).transforms[0]
    assert paper.transforms[1].transforms[0].hue == (-0.1, 0.1) and paper.transforms[3].p == 0.5


def test_mocov2_loss_is_infonce_of_view0_query_against_view1_key():
    m = make("mocov2")
    m.train()
    views = views_for(m)
    queue = m.queue.clone()
    loss, _ = m(views, torch.arange(4))
    with torch.no_grad():
        q = torch.nn.functional.normalize(m.embed(views[0]), dim=1)
        k = torch.nn.functional.normalize(m.projector_k(m.backbone_k(views[1])), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / m.temperature
        expected = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, expected, atol=1e-5)


def test_mocov2_queue_and_momentum_encoder():
    m = make("mocov2")
    m.train()
    views = views_for(m)
    before_k = m.backbone_k.conv1.weight.clone()
    loss, _ = m(views, torch.arange(4))
    assert int(m.queue_ptr) == 4
    with torch.no_grad():
        k = torch.nn.functional.normalize(m.projector_k(m.backbone_k(views[1])), dim=1)
    assert torch.allclose(m.queue[:4], k, atol=1e-5)
    m(views, torch.arange(4))
    m(views, torch.arange(4))  # 12 entries: wraps around
    assert int(m.queue_ptr) == 0
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    loss, _ = m(views, torch.arange(4))
    loss.backward()
    opt.step()
    m.after_step(1, 10)
    assert torch.equal(m.backbone_k.conv1.weight, m.backbone_k.conv1.weight.detach())
    delta_q = (m.backbone.conv1.weight - before_k).abs().max()
    delta_k = (m.backbone_k.conv1.weight - before_k).abs().max()
    assert 0 < delta_k < delta_q  # the key encoder moves by (1 - m) of the query's step
    assert not any(p.requires_grad for p in m.backbone_k.parameters())


def test_byol_tau_follows_schedule():
    m = make("byol", ema_momentum=0.9)
    m.after_step(0, 10)
    assert m.tau == pytest.approx(0.9)
    m.after_step(10, 10)
    assert m.tau == pytest.approx(1.0)


def test_simsiam_predictor_has_fixed_lr_group():
    m = make("simsiam")
    groups = m.param_groups()
    pred = [g for g in groups if g.get("fix_lr")]
    assert len(pred) == 1 and len(pred[0]["params"]) == len(list(m.predictor.parameters()))
    assert isinstance(m.projector[-1], torch.nn.BatchNorm1d) and not m.projector[-1].affine


@pytest.mark.parametrize("name", ["ensiam", "simsiam-kaug"])
def test_k_below_two_is_a_user_error(name):
    with pytest.raises(UserError, match="num_views"):
        make(name, num_views=1)


def test_fussl_m_below_two_is_a_user_error():
    with pytest.raises(UserError, match="fussl_m = 1"):
        make("fussl", fussl_m=1)
    with pytest.raises(UserError, match="base method"):
        make("fussl", fussl_base="fussl")


def _plain_loader(n=8, size=16):
    torch.manual_seed(3)
    imgs = torch.randn(n, 3, size, size)
    return [(imgs[:4], torch.arange(4)), (imgs[4:], torch.arange(4, 8))]


@pytest.mark.parametrize("base", ["simsiam"])
def test_fussl_phases(base):
    m = make("fussl", fussl_base=base, fussl_m=3)
    assert isinstance(m, FUSSL)
    # identically initialised blocks
    w = [b.backbone.conv1.weight for b in m.blocks]
    assert all(torch.equal(w[0], x) for x in w[1:])
    assert m.phase_plan(5) == (4, 1, 0)
    assert m.phase_plan(10) == (8, 1, 1)
    ctx = {"plain_loader": _plain_loader(), "num_train": 8, "device": torch.device("cpu")}
    assert m.prepare_epoch(0, 10, ctx) is True
    assert len(m.views(32)) == 6  # a pair of views per block
    m.train()
    loss, logs = m(views_for(m), torch.arange(4))
    assert set(logs) == {"loss_block0", "loss_block1", "loss_block2"}
    loss.backward()
    assert all(b.backbone.conv1.weight.grad is not None for b in m.blocks)
    assert m.prepare_epoch(1, 10, ctx) is False
    # phase 2a: pseudo-labels, the best block trains with cross-entropy
    assert m.prepare_epoch(8, 10, ctx) is True
    assert m.labels.shape == (8, 16) and torch.allclose(m.labels.sum(1), torch.ones(8))
    assert m.chosen in (0, 1, 2) and m.encoder is m.blocks[m.chosen].backbone
    assert len(m.views(32)) == 2
    assert all(p.requires_grad for p in m.encoder.parameters())
    others = [b for i, b in enumerate(m.blocks) if i != m.chosen]
    assert not any(p.requires_grad for b in others for p in b.parameters())
    m.zero_grad()
    loss, _ = m(views_for(m), torch.arange(4))
    loss.backward()
    assert m.encoder.conv1.weight.grad is not None
    # phase 2b: only the last stage and the projector
    assert m.prepare_epoch(9, 10, ctx) is True
    assert not m.encoder.conv1.weight.requires_grad and m.encoder.layer4[0].conv1.weight.requires_grad
    m.train()
    assert not m.encoder.layer1.training and m.encoder.layer4.training
    state = m.extra_state()
    fresh = make("fussl", fussl_base=base, fussl_m=3)
    fresh.load_extra_state(state)
    assert fresh.chosen == m.chosen and torch.equal(fresh.labels, m.labels)


def test_fussl_phase2_gets_its_own_lr_schedule():
    from bssl.train import lr_factor, restarted_lr_factor

    m = make("fussl", fussl_m=2)
    starts = m.schedule_starts(10)
    assert starts == [0, 8]
    spe = 5
    lrs = [restarted_lr_factor(s, spe, 10, starts, 2) for s in range(50)]
    assert lrs[:40] == [lr_factor(s, 40, 2) for s in range(40)]  # phase 1: warm-up, cosine over its 8 epochs
    assert lrs[39] < 0.01
    assert lrs[40] == 1.0  # phase 2 starts over at the base lr, without warm-up
    assert lrs[40:] == [lr_factor(s, 10, 0) for s in range(10)]
    plain = make("simsiam")
    assert [restarted_lr_factor(s, spe, 10, plain.schedule_starts(10), 2) for s in range(50)] == \
        [lr_factor(s, 50, 2) for s in range(50)]


def test_fussl_no_freeze_and_soft_only():
    m = make("fussl", fussl_freeze=False, fussl_soft_only=True, fussl_m=2)
    assert m.phase_plan(10) == (8, 2, 0)
    ctx = {"plain_loader": _plain_loader(), "num_train": 8, "device": torch.device("cpu")}
    m.prepare_epoch(8, 10, ctx)
    assert m.info["fussl_hard_fraction"] == 0.0
    assert len(m.blocks) == 2


def test_fussl_wraps_a_momentum_method():
    m = make("fussl", fussl_base="mocov2", fussl_m=2)
    ctx = {"plain_loader": _plain_loader(), "num_train": 8, "device": torch.device("cpu")}
    m.prepare_epoch(0, 5, ctx)
    m.train()
    loss, logs = m(views_for(m), torch.arange(4))
    assert torch.isfinite(loss) and len(logs) == 2
    assert all(int(b.queue_ptr) == 4 for b in m.blocks)
