"""train_teacher end to end on tiny shapes data: every method, checkpoint layout, exact resume, CLI."""

import argparse
import json

import pytest
import torch

from bssl.commands import teacher as teacher_cmd
from bssl.config import load_preset
from bssl.errors import UserError
from bssl.teachers import load_teacher, train_teacher
from bssl.utils import load_checkpoint


def tiny_cfg(method, **teacher):
    cfg = load_preset("smoke")
    cfg["run"]["device"] = "cpu"
    cfg["data"].update(num_train=32, num_test=16, image_size=16)
    cfg["teacher"].update(method=method, epochs=1, batch_size=16, proj_hidden=16, proj_dim=8, queue_size=32,
                          knn_every=1, small_stem=False, lr=0.05)
    cfg["teacher"].update(teacher)
    return cfg


@pytest.mark.parametrize("method,extra", [
    ("mocov2", {}), ("byol", {}), ("simsiam", {}), ("simsiam-kaug", {"num_views": 3}), ("ensiam", {"num_views": 3}),
    ("fussl", {"epochs": 2, "fussl_m": 2, "fussl_phase2_epochs": 1}), ("simclr", {}),
])
def test_every_method_trains_and_checkpoints(tmp_path, method, extra):
    torch.set_num_threads(1)
    res = train_teacher(tiny_cfg(method, **extra), tmp_path)
    assert res["method"] == method and 0.0 <= res["knn_acc"] <= 1.0 and res["images_per_s"] > 0
    assert len(res["history"]) == extra.get("epochs", 1) and all("loss" in h for h in res["history"])
    ckpt = load_checkpoint(res["checkpoint"], "teacher")
    assert ckpt["method"] == method and ckpt["arch"] == "resnet18" and ckpt["feature_dim"] == 512
    assert not any(k.startswith("fc.") for k in ckpt["backbone"])
    assert "projector" in ckpt["heads"]
    assert not any(k.startswith(("projector", "predictor")) for k in ckpt["backbone"])
    backbone, info = load_teacher(res["checkpoint"])
    assert info["format"] == "bssl" and backbone(torch.randn(2, 3, 16, 16)).shape == (2, 512)
    log = (tmp_path / "teacher_log.jsonl").read_text().splitlines()
    assert len(log) == len(res["history"])
    if method == "fussl":
        assert "fussl_chosen_block" in res["history"][-1]


def test_method_table_overrides_trainer_keys_for_that_method_only(tmp_path):
    from bssl.teachers.train import teacher_settings

    cfg = tiny_cfg("byol")
    cfg["teacher"]["byol"] = {"epochs": 2, "lr": 0.01, "ema_momentum": 0.9}
    t = teacher_settings(cfg)
    assert (t["epochs"], t["lr"], t["ema_momentum"]) == (2, 0.01, 0.9)
    other = tiny_cfg("simsiam")
    other["teacher"]["byol"] = {"epochs": 2}
    assert teacher_settings(other)["epochs"] == 1
    torch.set_num_threads(1)
    res = train_teacher(cfg, tmp_path)
    assert len(res["history"]) == 2 and res["history"][0]["lr"] <= 0.01
    assert load_checkpoint(res["checkpoint"], "teacher")["method_config"]["ema_momentum"] == 0.9


def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg("mocov2", epochs=2, knn_every=2)
    full = train_teacher(cfg, tmp_path / "full")
    part = train_teacher(cfg, tmp_path / "part", stop_after=1)
    assert len(part["history"]) == 1
    resumed = train_teacher(cfg, tmp_path / "part", resume=True)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-5)
    # the resumed run's time counts the epoch of the first invocation too
    assert resumed["history"][0]["seconds"] == part["history"][0]["seconds"] == part["train_seconds"] > 0
    assert resumed["train_seconds"] == pytest.approx(part["train_seconds"] + resumed["history"][1]["seconds"], abs=0.02)
    a = load_checkpoint(full["checkpoint"])
    b = load_checkpoint(resumed["checkpoint"])
    for k, v in a["method_state"].items():
        assert torch.allclose(v.float(), b["method_state"][k].float(), atol=1e-5), k
    # a different config is refused instead of silently mixing runs
    other = tiny_cfg("mocov2", epochs=2, knn_every=2, lr=0.5)
    with pytest.raises(UserError, match="different \\[teacher\\] config"):
        train_teacher(other, tmp_path / "part", resume=True)


def _cli(argv):
    p = argparse.ArgumentParser()
    teacher_cmd.add_arguments(p)
    return teacher_cmd.run(p.parse_args(argv))


def test_cli_train_refuse_resume_force(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "t"
    base = ["--preset", "smoke", "--method", "simsiam", "--out", str(out), "--device", "cpu",
            "--set", "data.num_train=32", "--set", "data.num_test=16", "--set", "data.image_size=16",
            "--set", "teacher.batch_size=16", "--set", "teacher.proj_hidden=16", "--set", "teacher.proj_dim=8"]
    assert _cli(base) == 0
    report = json.loads((out / "teacher_report.json").read_text())
    assert report["method"] == "simsiam" and report["checkpoint"].endswith("teacher.pt")
    assert "kNN accuracy" in capsys.readouterr().out
    with pytest.raises(UserError, match="already exists; pass --resume"):
        _cli(base)
    assert _cli(base + ["--resume", "--set", "teacher.epochs=2"]) == 0
    assert len(json.loads((out / "teacher_report.json").read_text())["history"]) == 2
    assert _cli(base + ["--force", "--report", str(tmp_path / "r.json")]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["history"]) == 1
    with pytest.raises(UserError, match="teacher.method = 'nope' .* is not a known method"):
        _cli(base + ["--method", "nope"])
    with pytest.raises(UserError, match="holds no teacher checkpoint"):
        _cli(base + ["--resume", "--out", str(tmp_path / "empty")])
