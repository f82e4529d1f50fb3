import subprocess
import sys
import tomllib

import pytest

from bssl.config import (DISTILL, apply_overrides, describe_keys, load_preset, preset_names, resolve,
                         teacher_settings, to_toml)
from bssl.errors import UserError


def test_presets_exist_and_inherit():
    names = preset_names()
    for required in ("smoke", "cpu", "cifar10", "imagenet-bssl"):
        assert required in names
    smoke, cpu = load_preset("smoke"), load_preset("cpu")
    assert smoke["preset"]["name"] == "smoke"
    # smoke only shrinks: every section of cpu is present
    assert set(cpu) <= set(smoke)
    assert smoke["data"]["num_train"] < cpu["data"]["num_train"]
    full = load_preset("imagenet-bssl")
    assert full["data"]["image_size"] == 224 and full["teacher"]["queue_size"] == 65536
    assert full["distill"]["lambda_start"] == 0.9 and full["distill"]["lambda_end"] == 0.7


def test_overrides_parse_values():
    cfg = apply_overrides(load_preset("smoke"), ["distill.width=0.5", "eval.protocols=[\"knn\"]", "teacher.method=byol"])
    assert cfg["distill"]["width"] == 0.5
    assert cfg["eval"]["protocols"] == ["knn"]
    assert cfg["teacher"]["method"] == "byol"


def test_unknown_preset_and_bad_override():
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        load_preset("nope")
    with pytest.raises(UserError, match="section.key=value"):
        apply_overrides({}, ["novalue"])


def test_preset_from_file(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('inherit = "smoke"\n[data]\nnum_train = 7\n')
    cfg = load_preset(str(p))
    assert cfg["data"]["num_train"] == 7 and cfg["preset"]["name"] == "mine"
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_preset(str(bad))


def _methods():
    from bssl.distill import METHODS as D
    from bssl.teachers import METHODS as T

    return T.names(), D.names()


@pytest.mark.parametrize("preset", ["smoke", "cpu", "cifar10", "imagenet-bssl"])
def test_every_shipped_preset_validates_with_every_method(preset):
    teachers, distills = _methods()
    for t in teachers:
        cfg, _ = resolve(preset, [f"teacher.method={t}"])
        settings = teacher_settings(cfg)
        assert settings["method"] == t and settings["epochs"] >= 1
    for d in distills:
        cfg, _ = resolve(preset, [f"distill.method={d}"])
        assert cfg["distill"]["method"] == d
        # every declared [distill] key is filled in: code reads it without a default of its own
        assert set(DISTILL) <= set(cfg["distill"])


@pytest.mark.parametrize("override, message", [
    ("distill.epoch_stage1=20", r"unknown config key distill.epoch_stage1 \(from --set\); did you mean distill.epochs_stage1"),
    ("distill.lr=abc", r"distill.lr = 'abc' \(from --set\) must be a finite number"),
    ("distill.epochs_stage1=2.5", "must be a whole number"),
    ("data.holdout_fraction=0.9", "must be <= 0.5"),
    ("distill.lr=-1", "must be >= 0"),
    ("teacher.method=mocov3", "is not a known method; did you mean mocov2"),
    ("distill.feature_similarity=cos", "must be one of"),
    ("eval.protocols=[\"knn\",\"svn\"]", "has 'svn'"),
    ("teacher.fussl_m=1", "must be >= 2"),
    ("teacher.simclr.queue_sise=3", "unknown config key teacher.simclr.queue_sise"),
    ("teacher.mocov3.epochs=3", r"unknown config table \[teacher.mocov3\]"),
    ("bogus.key=1", r"unknown config section \[bogus\]"),
    ("export.formats=[\"onnx\",\"tflite\"]", "allowed"),
])
def test_bad_values_are_one_clear_error(override, message):
    with pytest.raises(UserError, match=message):
        resolve("smoke", [override])


def test_flags_parse_strictly():
    cfg, _ = resolve("smoke", ["distill.fs_center=False", "distill.train_classifier=true"])
    assert cfg["distill"]["fs_center"] is False and cfg["distill"]["train_classifier"] is True
    with pytest.raises(UserError, match="must be true or false"):
        resolve("smoke", ["distill.fs_center=no"])


def test_what_the_user_says_last_wins(tmp_path):
    # the cpu preset gives MoCo v2 its own 30 epochs in [teacher.mocov2]
    cfg, _ = resolve("cpu", ["teacher.method=mocov2"])
    assert teacher_settings(cfg)["epochs"] == 30
    # a flat --set beats the preset's method table
    cfg, src = resolve("cpu", ["teacher.method=mocov2", "teacher.epochs=3"])
    assert teacher_settings(cfg)["epochs"] == 3 and src["teacher.epochs"] == "--set"
    # so does a flat key in a user's file that inherits the preset
    mine = tmp_path / "mine.toml"
    mine.write_text('inherit = "cpu"\n[teacher]\nepochs = 4\nmethod = "ensiam"\n')
    cfg, src = resolve(str(mine))
    assert teacher_settings(cfg)["epochs"] == 4 and src["teacher.epochs"] == f"file {mine}"
    # within one layer the method table beats the flat key, and --set can target the table too
    cfg, _ = resolve("cpu", ["teacher.method=ensiam", "teacher.ensiam.epochs=7"])
    assert teacher_settings(cfg)["epochs"] == 7
    # a method's own default (EnSiam's 4 views) stays unless someone sets num_views
    assert teacher_settings(cfg)["num_views"] == 4
    cfg, _ = resolve("cpu", ["teacher.method=ensiam", "teacher.num_views=3"])
    assert teacher_settings(cfg)["num_views"] == 3


def test_fussl_runs_under_the_smoke_preset_and_says_why_not_with_one_epoch():
    cfg, _ = resolve("smoke", ["teacher.method=fussl"])
    assert teacher_settings(cfg)["epochs"] == 2
    with pytest.raises(UserError, match="FUSSL needs at least 2 epochs"):
        resolve("smoke", ["teacher.method=fussl", "teacher.epochs=1"])


def test_show_is_toml_with_sources():
    cfg, src = resolve("smoke", ["distill.lr=0.01"])
    text = to_toml(cfg, src)
    parsed = tomllib.loads(text)
    assert parsed["distill"]["lr"] == 0.01
    assert "lr = 0.01  # --set" in text and "# preset smoke" in text and "# default" in text
    keys = describe_keys()
    assert "queue_size" in keys["teacher"] and "lambda_start" in keys["distill"]


def _bssl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bssl", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    out = tmp_path / "run"
    r = _bssl("run", "--preset", "smoke", "--out", str(out), "--set", "distill.epoch_stage1=20")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean distill.epochs_stage1" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()
    r = _bssl("config", "show", "--preset", "smoke", "--set", "teacher.epochs=2")
    assert r.returncode == 0 and "epochs = 2  # --set" in r.stdout


def test_run_on_a_bad_photo_folder_stops_before_any_folder_is_made(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "photos" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "photos" / split / "cat" / "0.jpg")
    out = tmp_path / "run"
    r = _bssl("run", "--preset", "smoke", "--dataset", "imagefolder", "--data-root", str(tmp_path / "photos"),
              "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "has a single class" in r.stderr
    assert not out.exists()
