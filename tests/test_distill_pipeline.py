"""run_distill / `bssl distill` end to end on tiny data: both stages, resume, stage-2 init, bad input."""

import json
from pathlib import Path

import pytest
import torch

from bssl.cli import main
from bssl.config import apply_overrides, load_preset
from bssl.errors import UserError
from conftest import write_teacher

TINY = ["data.num_train=32", "data.num_test=16", "distill.batch_size=16", "distill.num_pseudo_classes=16",
        "distill.classifier_hidden=32", "distill.epochs_stage1=1", "distill.epochs_stage2=1", "run.device=\"cpu\"",
        "teacher.proj_hidden=32", "teacher.proj_dim=16", "teacher.queue_size=64"]


def tiny_cfg(*extra):
    return apply_overrides(load_preset("smoke"), TINY + list(extra))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A real bssl teacher checkpoint (randomly initialised MoCo v2 ResNet-18, small stem, 32 px)."""
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", tiny_cfg())


@pytest.fixture(scope="module")
def full_run(teacher_ckpt, tmp_path_factory):
    from bssl.distill import run_distill

    out = tmp_path_factory.mktemp("distill")
    return out, run_distill(tiny_cfg(), teacher_ckpt, out, progress=False)


def test_two_stages_write_student_history_and_plots(full_run):
    from bssl.models import load_student
    from bssl.nn import get_stage

    out, res = full_run
    assert res["stages"] == [1, 2]
    assert [Path(p).name for p in res["stage_checkpoints"]] == ["stage1.pt", "stage2.pt"]
    student = load_student(res["checkpoint"])
    assert get_stage(student) == 2
    assert [h["stage"] for h in res["history"]] == [1, 2]
    for key in ("loss", "kl", "fs", "lambda", "lr", "grad_classifier", "grad_features", "grad_student_classifier"):
        assert key in res["history"][0], key
    assert res["history"][0]["grad_classifier"] > 0 and res["history"][0]["grad_features"] > 0
    assert all(Path(p).stat().st_size > 1000 for p in res["plots"])
    assert json.loads((out / "distill.json").read_text())["checkpoint"] == res["checkpoint"]
    assert not (out / "stage1").exists()  # resume state is removed once a stage ends
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_stage2_starts_from_stage1_student_and_classifier(full_run, teacher_ckpt, tmp_path):
    """Stage 2 alone from --init: its start equals stage 1's end (student and g), weights unchanged."""
    from bssl.distill import run_distill

    out, _ = full_run
    s1 = torch.load(out / "stage1.pt", weights_only=True)
    cfg = tiny_cfg("distill.epochs_stage2=1", "distill.lr=0.0")  # lr 0: stage 2 must keep stage 1's weights
    res = run_distill(cfg, teacher_ckpt, tmp_path / "s2", stage=2, init=out / "stage1.pt", progress=False)
    s2 = torch.load(tmp_path / "s2" / "stage2.pt", weights_only=True)
    for k, v in s1["student_state"].items():
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, s2["student_state"][k]), k
    for k, v in s1["method_state"].items():
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, s2["method_state"][k]), k
    assert res["stages"] == [2]


def test_resume_continues_from_last_epoch(full_run, teacher_ckpt, tmp_path):
    """Interrupt after the first epoch, resume, and end exactly where the uninterrupted run ended."""
    import bssl.distill.trainer as T
    from bssl.distill import run_distill

    _, full = full_run
    out = tmp_path / "r"
    orig = T.JsonlLogger.log

    def crash_after_first(self, **rec):
        orig(self, **rec)
        raise KeyboardInterrupt

    T.JsonlLogger.log = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            run_distill(tiny_cfg(), teacher_ckpt, out, progress=False)
    finally:
        T.JsonlLogger.log = orig
    assert (out / "stage1" / "last.pt").exists() and not (out / "student.pt").exists()
    res = run_distill(tiny_cfg(), teacher_ckpt, out, resume=True, progress=False)
    assert [(h["stage"], h["epoch"]) for h in res["history"]] == [(1, 1), (2, 1)]
    for a, b in zip(res["history"], full["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_bad_inputs_are_user_errors(teacher_ckpt, tmp_path):
    from bssl.distill import run_distill

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "o"
    with pytest.raises(UserError, match="bad.pt"):
        run_distill(tiny_cfg(), bad, out)
    with pytest.raises(UserError, match="image_size"):
        run_distill(tiny_cfg("data.image_size=64"), teacher_ckpt, out)
    with pytest.raises(UserError, match="stage-1 checkpoint"):
        run_distill(tiny_cfg(), teacher_ckpt, out, stage=2)
    with pytest.raises(UserError, match="does not exist"):
        run_distill(tiny_cfg(), tmp_path / "missing.pt", out)
    assert not out.exists()  # nothing half-written


def test_cli_errors_and_refuses_to_overwrite(full_run, teacher_ckpt, tmp_path, capsys):
    out, _ = full_run
    assert main(["distill", "--preset", "smoke", "--teacher", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main(["distill", "--preset", "smoke", "--teacher", str(teacher_ckpt), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["distill", "--preset", "smoke", "--teacher", str(teacher_ckpt), "--out", str(tmp_path / "y"),
                 "--stage", "2"]) == 2
    assert "stage-1 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
