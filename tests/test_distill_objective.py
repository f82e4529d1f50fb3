"""BSSL method: gradients reach the student (k, l) and the classifier g; the teacher h stays frozen."""

import copy

import pytest
import torch
from torch import nn

from bssl.distill import METHODS
from bssl.distill.optim import LARS, build_optimizer
from bssl.errors import UserError


def tiny_teacher(dim: int = 24) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, dim, 3, 2, 1), nn.BatchNorm2d(dim), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


def tiny_student(num_classes: int) -> nn.Module:
    from bssl.models import build_model

    return build_model("reactnet-a", num_classes=num_classes, input_size=32, width=0.125, stem="small", stage=1)


def dcfg(**kw):
    base = {"num_pseudo_classes": 12, "classifier_hidden": 16, "temperature": 0.2, "feature_similarity": "cosine",
            "lambda_schedule": "cosine", "fs_target": "features"}
    base.update(kw)
    return base


def one_step(method_kw=None, steps=1):
    torch.manual_seed(0)
    cfg = dcfg(**(method_kw or {}))
    teacher = tiny_teacher()
    teacher.train()  # the method must put it in eval mode itself
    frozen = copy.deepcopy(teacher.state_dict())
    teacher.requires_grad_(False)
    student = tiny_student(cfg["num_pseudo_classes"])
    method = METHODS.get("bssl")(student, {"feature_dim": 24}, cfg)
    opt = build_optimizer([student, method], {"optimizer": "adam", "lr": 1e-3})
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    for i in range(steps):
        out = method.loss(student, teacher, views, None, i, 10)
        opt.zero_grad()
        out["loss"].backward()
        grads = {k: [p.grad for p in v] for k, v in method.grad_groups(student).items()}
        opt.step()
    return teacher, frozen, student, method, out, grads


def _nonzero(grads):
    return any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.fixture(scope="module")
def default_run():
    return one_step(steps=2)


def test_gradients_reach_student_and_classifier(default_run):
    teacher, frozen, student, method, out, grads = default_run
    assert torch.isfinite(out["loss"])
    assert _nonzero(grads["features"]), "no gradient reached the student's feature extractor k"
    assert _nonzero(grads["student_classifier"]), "no gradient reached the student's classifier l"
    assert _nonzero(grads["classifier"]), "no gradient reached the joint classifier g"
    assert _nonzero(grads["projector"])
    assert out["loss"].requires_grad  # not computed under no_grad as in the released code
    assert "g_infomax" in out  # the anti-collapse term on g is on by default


def test_teacher_weights_and_bn_statistics_stay_frozen(default_run):
    teacher, frozen, *_ = default_run
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, frozen[k]), f"teacher entry {k} changed"
    assert all(p.grad is None for p in teacher.parameters())


def test_student_and_classifier_change_after_step():
    torch.manual_seed(0)
    cfg = dcfg()
    student = tiny_student(12)
    method = METHODS.get("bssl")(student, {"feature_dim": 24}, cfg)
    before_g = copy.deepcopy(method.classifier.state_dict())
    before_l = student.classifier.weight.detach().clone()
    teacher = tiny_teacher().requires_grad_(False)
    opt = build_optimizer([student, method], {"lr": 1e-2})
    out = method.loss(student, teacher, [torch.randn(8, 3, 32, 32)] * 2, None, 0, 10)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert not torch.equal(method.classifier.net[0].weight, before_g["net.0.weight"])
    assert not torch.equal(student.classifier.weight, before_l)


def test_frozen_classifier_switch_reproduces_released_setup():
    _, _, _, method, out, grads = one_step({"train_classifier": False})
    assert "classifier" not in grads and "g_infomax" not in out
    assert all(p.grad is None for p in method.classifier.parameters())


def test_ablation_switches():
    _, _, _, method, out, _ = one_step({"feature_similarity": "none"})
    expected = float(out["kl"].detach()) + float(out["g_infomax"].detach())  # β = 1 by default
    assert float(out["fs"].detach()) == 0.0 and float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert not hasattr(method, "projector")
    _, _, _, method, out, grads = one_step({"fs_target": "head", "feature_similarity": "l2"})
    assert not hasattr(method, "projector") and float(out["fs"].detach()) > 0
    _, _, _, _, out, _ = one_step({"lambda_schedule": "constant"})
    assert float(out["lambda"]) == pytest.approx(0.7)
    with pytest.raises(UserError):
        one_step({"fs_target": "pixels"})
    with pytest.raises(UserError):
        one_step({"lambda_schedule": "linear"})


def test_lars_minimises_quadratic():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(10) * 3)
    b = nn.Parameter(torch.zeros(1))
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True}], lr=1.0, momentum=0.9, eta=0.02)
    start = float((w.detach() ** 2).sum())
    for _ in range(200):
        opt.zero_grad()
        ((w ** 2).sum() + (b - 1) ** 2).sum().backward()
        opt.step()
    assert float((w.detach() ** 2).sum()) < 0.1 * start
    with pytest.raises(UserError):
        build_optimizer([nn.Linear(2, 2)], {"optimizer": "rmsprop"})


def test_direct_simclr_baseline_trains_the_student():
    torch.manual_seed(0)
    student = tiny_student(12)
    method = METHODS.get("direct-simclr")(student, {"ssl_config": {"proj_hidden": 16, "proj_dim": 8}}, dcfg())
    out = method.loss(student, None, [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)], None, 0, 10)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = method.grad_groups(student)
    assert _nonzero(grads["features"]) and _nonzero(grads["ssl_heads"])


def test_direct_mocov2_baseline_trains_the_student_with_the_teacher_settings():
    torch.manual_seed(0)
    student = tiny_student(12)
    method = METHODS.get("direct-mocov2")(student, {"ssl_config": {"queue_size": 32, "proj_hidden": 16,
                                                                    "proj_dim": 8}}, dcfg())
    assert method.ssl.queue.shape == (32, 8)
    out = method.loss(student, None, [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)], None, 0, 10)
    out["loss"].backward()
    grads = method.grad_groups(student)
    assert _nonzero(grads["features"]) and _nonzero(grads["ssl_heads"])
    method.after_step(student, 0, 10)  # momentum update of the key encoder runs


def test_s2bnn_head_rebuild_and_supervised_kl():
    from bssl.distill.s2bnn import rebuild_sequential
    from bssl.teachers.heads import mlp

    torch.manual_seed(0)
    head = mlp([24, 16, 8]).eval()
    rebuilt = rebuild_sequential(head.state_dict()).eval()
    x = torch.randn(4, 24)
    assert torch.allclose(head(x), rebuilt(x))

    student = tiny_student(5)
    method = METHODS.get("supervised-kl")(student, {"feature_dim": 24}, dcfg(), num_labels=5)
    assert METHODS.get("supervised-kl").student_num_classes(dcfg(), 5) == 5
    teacher = tiny_teacher().requires_grad_(False)
    out = method.loss(student, teacher, [torch.randn(8, 3, 32, 32)] * 2, torch.randint(0, 5, (8,)), 0, 10)
    out["loss"].backward()
    assert method.classifier.weight.grad.abs().sum() > 0  # the labels train the teacher-side classifier
    assert _nonzero([p.grad for p in student.classifier.parameters()])
