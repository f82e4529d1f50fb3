import pytest

from bssl.config import apply_overrides, load_preset, preset_names
from bssl.errors import UserError


def test_presets_exist_and_inherit():
    names = preset_names()
    for required in ("smoke", "cpu", "imagenet-bssl"):
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
