"""bssl.eval end to end on the embedded data with a tiny CNN: evaluate(), cache, ONNX extractor, CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from bssl.config import load_preset
from bssl.errors import UserError
from bssl.eval import OnnxExtractor, TorchExtractor, evaluate, load_feature_extractor
from bssl.eval.context import EvalContext


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def tiny_cfg():
    cfg = load_preset("smoke")
    cfg["data"].update(num_train=96, num_test=64)
    cfg["eval"].update(svm_max_train=96, svm_max_test=64, jobs=1, linear_epochs=2,
                       fewshot_k=[1, 2], fewshot_samples=2, knn_k=20, svm_costs=[0.1, 1.0], transfer_num_train=64,
                       transfer_num_test=32, semisup_fractions=[0.1], semisup_batch_size=32)
    return cfg


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    net = tiny_net().eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(2, 3, 32, 32),), str(path), input_names=["input"], output_names=["features"],
                          dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}}, dynamo=False)
    return path, net


def test_evaluate_all_protocols_writes_reports(tmp_path):
    protocols = ["linear", "knn", "svm", "fewshot", "rankme", "transfer", "semisup"]
    res = evaluate(tiny_net(), tiny_cfg(), protocols, tmp_path)
    assert list(res) == protocols
    for name, r in res.items():
        assert np.isfinite(r["value"]), name
        assert {"metric", "value", "details", "dataset", "train_split", "n_train", "source"} <= set(r)
    assert 0 <= res["linear"]["value"] <= 1 and res["linear"]["details"]["epochs"] == 2
    assert res["svm"]["dataset"] == "shapes-multilabel" and res["linear"]["dataset"] == "shapes"
    assert res["transfer"]["dataset"] == "digits" and res["rankme"]["test_split"] is None
    assert set(res["fewshot"]["details"]["per_k"]) == {"1", "2"}
    assert 1 <= res["rankme"]["value"] <= 16
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["results"]) == set(protocols)
    md = (tmp_path / "eval.md").read_text()
    assert "| fewshot |" in md and "#### fewshot" in md
    assert (tmp_path / "fewshot.png").read_bytes()[:4] == b"\x89PNG"
    from bssl.eval import format_comparison, plot_fewshot

    table = format_comparison({"a": res, "b": {"knn": res["knn"]}})
    assert f"| knn | {res['knn']['source']} | top1 (%) |" in table and "n/a" in table
    assert f"| linear | {res['linear']['source']} | top1 (%) |" in table
    assert plot_fewshot({"a": res["fewshot"], "b": res["fewshot"]}, tmp_path / "both.png").stat().st_size > 0


def test_feature_cache_hits_and_keys_on_content(tmp_path):
    cfg = tiny_cfg()
    ext = TorchExtractor(tiny_net(0), 32)
    first = EvalContext(ext, cfg, tmp_path).features("shapes", "test", None)
    again = EvalContext(ext, cfg, tmp_path).features("shapes", "test", None)
    assert not first.meta["cached"] and again.meta["cached"]
    np.testing.assert_array_equal(first.features, again.features)
    assert isinstance(again.features, np.memmap)  # big caches are read, not loaded
    from bssl.eval.linear import train_linear

    mem, ram = (train_linear(f, f, epochs=2, lr=1.0, norm="standardize", batch_size=16) for f in (again, first))
    assert mem["details"]["final_train_loss"] == pytest.approx(ram["details"]["final_train_loss"], rel=1e-4)
    other = EvalContext(TorchExtractor(tiny_net(1), 32), cfg, tmp_path).features("shapes", "test", None)
    assert not other.meta["cached"] and other.meta["key"] != first.meta["key"]
    cfg["data"]["num_test"] = 32  # a different dataset size is a different entry
    smaller = EvalContext(ext, cfg, tmp_path).features("shapes", "test", None)
    assert not smaller.meta["cached"] and len(smaller.features) == 32


def test_onnx_extractor_matches_torch(onnx_model):
    path, net = onnx_model
    ext = load_feature_extractor(path)
    assert isinstance(ext, OnnxExtractor) and ext.output_name == "features" and ext.input_size == 32
    x = torch.randn(5, 3, 32, 32)
    np.testing.assert_allclose(ext(x), net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_model_evaluates_and_refuses_semisup(onnx_model, tmp_path):
    path, _ = onnx_model
    res = evaluate(path, tiny_cfg(), ["knn"], tmp_path)
    assert 0 <= res["knn"]["value"] <= 1
    with pytest.raises(UserError, match="onnx"):
        evaluate(path, tiny_cfg(), ["semisup"], tmp_path)


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown eval protocol"):
        evaluate(tiny_net(), tiny_cfg(), ["svn"], tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_feature_extractor(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_feature_extractor(tmp_path / "missing.onnx")


class NanNet(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


def test_nan_features_stop_the_evaluation(tmp_path):
    with pytest.raises(UserError, match="NaN"):
        evaluate(NanNet(), tiny_cfg(), ["knn"], tmp_path)
    assert not (tmp_path / "eval.json").exists()


def _cli(argv):
    """Run `bssl eval` through the real CLI entry point; while other subcommands are still missing,
    through the eval command module with the same UserError -> exit 2 handling as bssl.cli.main."""
    from bssl import cli

    try:
        cli.build_parser()
    except ModuleNotFoundError:
        from bssl.commands import eval as eval_cmd

        parser = argparse.ArgumentParser(prog="bssl eval")
        eval_cmd.add_arguments(parser)
        args = parser.parse_args(argv)
        try:
            return eval_cmd.run(args)
        except UserError as exc:
            print(f"bssl eval: error: {exc}", file=__import__("sys").stderr)
            return exc.exit_code
    return cli.main(["eval", *argv])


def test_cli_eval_onnx_and_errors(onnx_model, tmp_path, capsys):
    path, _ = onnx_model
    report = tmp_path / "r.json"
    rc = _cli(["knn", "rankme", "--checkpoint", str(path), "--preset", "smoke", "--out", str(tmp_path / "o"),
               "--report", str(report), "--set", "data.num_train=64", "--set", "data.num_test=32",
               "--set", "eval.knn_k=10"])
    assert rc == 0
    assert set(json.loads(report.read_text())["results"]) == {"knn", "rankme"}
    assert "| knn |" in capsys.readouterr().out
    assert _cli(["lineer", "--checkpoint", str(path), "--preset", "smoke"]) == 2
    assert "unknown protocol 'lineer'" in capsys.readouterr().err
    assert _cli(["knn", "--checkpoint", str(tmp_path / "nope.pt"), "--preset", "smoke"]) == 2


def test_student_and_teacher_checkpoints_dispatch(tmp_path, capsys):
    from bssl.models import build_backbone, build_model, save_student
    from bssl.utils import save_checkpoint

    cfg = tiny_cfg()
    student = build_model("reactnet-a", num_classes=10, input_size=32, width=0.125, stem="small")
    save_student(tmp_path / "student.pt", student, cfg)
    ext = load_feature_extractor(tmp_path / "student.pt")
    x = torch.randn(2, 3, 32, 32)
    student.eval()
    np.testing.assert_allclose(ext(x), student.features(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert ext.input_size == 32 and ext.module is not None

    bb = build_backbone("resnet18", small_stem=True)
    save_checkpoint(tmp_path / "teacher.pt", "teacher", {"backbone": bb.state_dict(), "arch": "resnet18",
                    "small_stem": True, "feature_dim": bb.feature_dim, "heads": {}, "method": "mocov2"}, cfg)
    tex = load_feature_extractor(tmp_path / "teacher.pt")
    assert tex.input_size == 32 and tex(x).shape == (2, bb.feature_dim)

    save_checkpoint(tmp_path / "other.pt", "distill-state", {"x": 1}, cfg)
    with pytest.raises(UserError, match="distill-state"):
        load_feature_extractor(tmp_path / "other.pt")

    # semisup fine-tunes the student end to end from the CLI
    rc = _cli(["semisup", "--checkpoint", str(tmp_path / "student.pt"), "--preset", "smoke", "--out", str(tmp_path / "o"),
               "--set", "data.num_train=40", "--set", "data.num_test=20", "--set", "eval.semisup_fractions=[0.5]",
               "--set", "eval.semisup_batch_size=16"])
    assert rc == 0
    report = json.loads((tmp_path / "o" / "eval.json").read_text())["results"]["semisup"]
    assert report["details"]["per_fraction"]["0.5"]["n_labels"] == 20 and 0 <= report["value"] <= 1


def test_labels_out_of_range_are_a_user_error(tmp_path):
    from bssl.data.registry import ArrayDataset
    from bssl.eval import cached_features

    imgs = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    ds = ArrayDataset(imgs, np.array([0, 1, 12, 1]), ["a", "b", "c"])
    with pytest.raises(UserError, match="label 12 is out of range 0..2"):
        cached_features(TorchExtractor(tiny_net(), 32), ds, {"dataset": "custom", "split": "train"}, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written in the cache
