import json

import pytest
import torch
from torch import nn

from bssl.errors import UserError
from bssl.models import build_model, save_student
from bssl.nn import BinaryConvBN, set_stage
from bssl.profile import format_table, packed_weight_bytes, profile_model


def rel(a, b):
    return abs(a - b) / b


def meta_model(name, **kw):
    # counting needs shapes only; the meta device skips allocating and initialising 29M weights
    with torch.device("meta"):
        return build_model(name, **kw)


@pytest.fixture(scope="module")
def reactnet_a_224():
    return profile_model(meta_model("reactnet-a"), 224)


def test_reactnet_a_published_figures(reactnet_a_224):
    r = reactnet_a_224
    assert rel(r["bops"], 4.82e9) < 0.01
    assert rel(r["flops"], 1.19e7) < 0.01
    assert rel(r["ops"], 0.87e8) < 0.02
    assert rel(r["params"], 29.34e6) < 0.01
    assert rel(r["binary_params"], 28.25e6) < 0.01
    assert r["ops"] == r["bops"] / 64 + r["flops"]
    assert r["binary_layers"] == 31 and r["output_shape"] == [1, 1000]


def test_birealnet18_published_figures():
    r = profile_model(meta_model("birealnet-18"), 224)
    assert rel(r["bops"], 1.68e9) < 0.01
    assert rel(r["flops"], 1.39e8) < 0.01
    assert rel(r["ops"], 1.63e8) < 0.02


def test_reactnet18_costs_like_birealnet18():
    a, b = profile_model(meta_model("reactnet-18"), 224), profile_model(meta_model("birealnet-18"), 224)
    assert (a["bops"], a["flops"], a["binary_params"]) == (b["bops"], b["flops"], b["binary_params"])
    assert a["fp_params"] > b["fp_params"]  # the RPReLUs


@pytest.mark.parametrize("name, flops", [("reactnet-b", 0.44e8), ("reactnet-c", 1.40e8)])
def test_reactnet_variants_costs(name, flops):
    r = profile_model(meta_model(name), 224)
    assert rel(r["bops"], 4.69e9) < 0.01
    assert rel(r["flops"], flops) < 0.01


def test_counts_by_hand_on_a_tiny_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), BinaryConvBN(8, 16, 3, stride=2), nn.Flatten(),
                        nn.Linear(16 * 4 * 4, 10))
    r = profile_model(net, 8)
    assert r["flops"] == 8 * 8 * 8 * 27 + 256 * 10
    assert r["bops"] == 16 * 4 * 4 * 8 * 9
    assert r["binary_params"] == 16 * 8 * 9
    assert r["params"] == 8 * 27 + (8 + 16 * 72 + 32) + (2560 + 10)
    assert r["fp_params"] == r["params"] - r["binary_params"]
    # 8 input channels pad to one 64-bit word per (out channel, tap)
    assert packed_weight_bytes(net[1].conv) == 16 * 9 * 8
    assert packed_weight_bytes(net[1].conv, word_bits=32) == 16 * 9 * 4
    assert r["deployed_bytes"] == 16 * 9 * 8 + 4 * 16 + 4 * r["fp_params"]
    assert r["fp32_bytes"] == 4 * r["params"]
    # peak: the binary unit's sign layer reads and writes 8x8x8 floats, the stem 3x8x8 -> 8x8x8
    assert r["activation_peak_bytes"] == 4 * (8 * 64 + 8 * 64)
    assert sum(l["params"] for l in r["layers"]) == r["params"]


def test_shared_module_counts_ops_twice_params_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.unit = BinaryConvBN(3, 3, 3)

        def forward(self, x):
            return self.unit(self.unit(x))

    net = Twice()
    r = profile_model(net, 6)
    assert r["bops"] == 2 * 3 * 36 * 3 * 9
    assert r["params"] == sum(p.numel() for p in net.parameters()) == sum(l["params"] for l in r["layers"])
    assert r["binary_params"] == 3 * 3 * 9 and r["packed_binary_bytes"] == 3 * 9 * 8


def test_stage_does_not_change_counts_and_model_state_is_restored():
    m = build_model("reactnet-a", input_size=32, width=0.25, num_classes=10)
    m.train()
    r2 = profile_model(m, 32)
    rm = profile_model(meta_model("reactnet-a", input_size=32, width=0.25, num_classes=10), 32)
    assert {k: v for k, v in rm.items() if k != "layers"} == {k: v for k, v in r2.items() if k != "layers"}
    assert m.training
    set_stage(m, 1)
    r1 = profile_model(m, 32)
    assert (r1["bops"], r1["flops"], r1["params"]) == (r2["bops"], r2["flops"], r2["params"])


def test_deployed_is_much_smaller_and_table_renders(reactnet_a_224):
    r = reactnet_a_224
    assert r["deployed_bytes"] < r["fp32_bytes"] / 10
    table = format_table(r)
    assert "blocks.0.unit3x3" in table and "OPs" in table
    json.dumps(r)


def _cli(argv, monkeypatch):
    import bssl.cli as cli
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("profile",))
    return cli.main(argv)


def test_cli_json_and_report(tmp_path, monkeypatch, capsys):
    report = tmp_path / "prof.json"
    rc = _cli(["profile", "reactnet-a", "--input-size", "224", "--json", "--report", str(report)], monkeypatch)
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert rel(out["bops"], 4.82e9) < 0.01 and rel(out["ops"], 0.87e8) < 0.02
    assert json.loads(report.read_text())["flops"] == out["flops"]


def test_cli_fp_backbone(monkeypatch, capsys):
    assert _cli(["profile", "resnet18", "--json"], monkeypatch) == 0
    out = json.loads(capsys.readouterr().out)
    # torchvision ResNet-18 without its FC: 1.81e9 MACs, 11.18M parameters, nothing binary
    assert rel(out["flops"], 1.814e9) < 0.01 and out["bops"] == 0 and out["binary_params"] == 0
    assert out["params"] == 11_176_512 and out["deployed_bytes"] == out["fp32_bytes"]


def test_cli_checkpoint_and_errors(tmp_path, monkeypatch, capsys):
    m = build_model("birealnet-18", input_size=32, width=0.125, num_classes=4)
    ck = tmp_path / "student.pt"
    save_student(ck, m, {})
    assert _cli(["profile", str(ck), "--no-layers"], monkeypatch) == 0
    assert "birealnet-18" in capsys.readouterr().out
    assert _cli(["profile", "reactnet-q"], monkeypatch) == 2
    assert _cli(["profile", "reactnet-a", "--input-size", "40", "--stem", "small"], monkeypatch) == 2
    assert _cli(["profile", str(ck), "--input-size", "12"], monkeypatch) == 2
    assert _cli(["profile", str(tmp_path / "missing.pt")], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "multiple of" in err and "does not exist" in err


def test_cli_profiles_an_official_checkpoint(tmp_path, monkeypatch, capsys):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_models import _official_a_state
    ckpt, _ = _official_a_state(8, 5)
    p = tmp_path / "checkpoint.pth.tar"
    torch.save(ckpt, p)
    assert _cli(["profile", str(p), "--input-size", "64", "--json"], monkeypatch) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "reactnet-a" and out["binary_layers"] == 31 and out["output_shape"] == [1, 5]


def test_python_api_profile_accepts_names_models_and_paths(tmp_path):
    from bssl.profile import profile
    by_name = profile("reactnet-a", input_size=32, width=0.25, num_classes=10)
    m = build_model("reactnet-a", input_size=32, width=0.25, num_classes=10)
    by_model = profile(m)
    p = tmp_path / "s.pt"
    save_student(p, m, {})
    by_path = profile(p)
    strip = lambda r: {k: v for k, v in r.items() if k != "layers"}
    assert strip(by_name) == strip(by_model) == strip(by_path)
    with pytest.raises(UserError, match="input_size"):
        profile(nn.Conv2d(3, 3, 1))
