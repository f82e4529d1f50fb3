"""load_teacher: official MoCo v2 / SimSiam .pth.tar, torchvision state dicts, bssl checkpoints, bad files."""

import pytest
import torch
import torchvision

from bssl.errors import UserError
from bssl.teachers import load_teacher
from bssl.utils import save_checkpoint


def _resnet(name="resnet18"):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None)
    # non-trivial BN statistics, so a silently skipped buffer would show
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net


def _trunk(net):
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _assert_same(backbone, net):
    got = backbone.state_dict()
    want = _trunk(net)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    net.fc = torch.nn.Identity()
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x), net(x), atol=1e-6)


def test_official_mocov2_checkpoint(tmp_path):
    net = _resnet()
    sd = {f"module.encoder_q.{k}": v for k, v in _trunk(net).items()}
    sd.update({f"module.encoder_k.{k}": v + 1 for k, v in _trunk(net).items()})
    sd.update({"module.encoder_q.fc.0.weight": torch.randn(512, 512), "module.encoder_q.fc.0.bias": torch.zeros(512),
               "module.encoder_q.fc.2.weight": torch.randn(128, 512), "module.encoder_q.fc.2.bias": torch.zeros(128),
               "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    path = tmp_path / "moco_v2_200ep_pretrain.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, path)
    backbone, info = load_teacher(path)
    assert info["format"] == "moco" and info["arch"] == "resnet18" and info["epoch"] == 200
    assert info["feature_dim"] == 512 and not info["small_stem"] and not backbone.training
    _assert_same(backbone, net)


def test_official_simsiam_checkpoint_resnet50(tmp_path):
    net = _resnet("resnet50")
    sd = {f"module.encoder.{k}": v for k, v in _trunk(net).items()}
    sd.update({"module.encoder.fc.0.weight": torch.randn(16, 2048), "module.encoder.fc.6.weight": torch.randn(16, 16),
               "module.predictor.0.weight": torch.randn(4, 16), "module.predictor.3.weight": torch.randn(16, 4)})
    path = tmp_path / "checkpoint_0099.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": sd, "optimizer": {}}, path)
    backbone, info = load_teacher(path)
    assert info["format"] == "simsiam" and info["arch"] == "resnet50" and info["feature_dim"] == 2048
    _assert_same(backbone, net)


def test_torchvision_state_dict_arch_inferred(tmp_path):
    net = _resnet()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)  # with the 1000-class fc, no 'arch' entry
    backbone, info = load_teacher(path)
    assert info["format"] == "torchvision" and info["arch"] == "resnet18"
    _assert_same(backbone, net)
    with pytest.raises(UserError, match="resnet18.pth does not fit a resnet50"):
        load_teacher(path, arch="resnet50")


def test_small_stem_is_detected(tmp_path):
    net = _resnet()
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    path = tmp_path / "small.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    backbone, info = load_teacher(path)
    assert info["small_stem"]
    _assert_same(backbone, net)


def test_bssl_teacher_checkpoint_and_its_errors(tmp_path):
    net = _resnet()
    state = {"backbone": _trunk(net), "arch": "resnet18", "small_stem": False, "feature_dim": 512,
             "heads": {"projector": {"0.weight": torch.zeros(2, 2)}}, "method": "byol", "epoch": 3}
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, "teacher", state, {"teacher": {}})
    backbone, info = load_teacher(path)
    assert info["format"] == "bssl" and info["method"] == "byol" and info["heads"] == ["projector"]
    _assert_same(backbone, _resnet())
    # feature size that contradicts the arch
    bad = tmp_path / "bad_dim.pt"
    save_checkpoint(bad, "teacher", {**state, "feature_dim": 2048}, {})
    with pytest.raises(UserError, match="bad_dim.pt.*feature_dim 2048"):
        load_teacher(bad)
    # weights of one arch, loaded as another
    with pytest.raises(UserError, match="teacher.pt records feature_dim 512 but a resnet50"):
        load_teacher(path, arch="resnet50")
    other = tmp_path / "student.pt"
    save_checkpoint(other, "student", {"spec": {}}, {})
    with pytest.raises(UserError, match="student.pt.*not a teacher"):
        load_teacher(other)


def test_unknown_keys_and_unreadable_files(tmp_path):
    path = tmp_path / "weird.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(1), "bar.bias": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="weird.pth: keys match no known format.*foo.weight"):
        load_teacher(path)
    with pytest.raises(UserError, match="does not exist"):
        load_teacher(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth could not be read"):
        load_teacher(junk)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": _resnet()}, pickled)  # a whole module: refused by weights_only
    with pytest.raises(UserError, match="pickled.pth could not be read with weights_only"):
        load_teacher(pickled)
