"""`bssl eval` from the CLI on every real-format fixture (ImageFolder, CIFAR, STL-10, VOC2007)."""

import json

import pytest
import torch

from test_datasets_real import make_cifar10, make_cifar100, make_imagefolder, make_stl10, make_voc2007
from test_eval_pipeline import _cli, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = ["--preset", "smoke", "--set", "eval.jobs=1", "--set", "eval.linear_epochs=2", "--set", "eval.knn_k=5",
        "--set", "eval.fewshot_k=[1]", "--set", "eval.fewshot_samples=1", "--set", "eval.svm_costs=[1.0]",
        "--set", "data.batch_size=16"]
MAKERS = {"imagefolder": make_imagefolder, "cifar10": make_cifar10, "cifar100": make_cifar100,
          "stl10": lambda root: make_stl10(root, n_train=20, n_test=10), "voc2007": make_voc2007}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny CNN exported to ONNX with a "features" output, the format `bssl export` provides."""
    import warnings

    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_net().eval(), (torch.zeros(2, 3, 32, 32),), str(path), input_names=["input"],
                          output_names=["features"], dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                          dynamo=False)
    return path


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_protocols_run_from_cli_on_fixture(dataset, model_path, tmp_path):
    root = tmp_path / "data"
    MAKERS[dataset](root)
    protocols = ["linear", "knn", "svm", "fewshot", "rankme"] if dataset != "cifar100" else ["knn", "rankme"]
    report = tmp_path / "report.json"
    rc = _cli([*protocols, "--checkpoint", str(model_path), "--dataset", dataset, "--data-root", str(root),
               "--out", str(tmp_path / "out"), "--report", str(report), *FAST])
    assert rc == 0
    results = json.loads(report.read_text())["results"]
    assert list(results) == protocols
    for name, res in results.items():
        assert res["dataset"] == dataset and res["data_root"] == str(root), name  # SVM too: the data given
        assert res["source"].startswith(f"{dataset} {root}, {res['train_split']}"), name
    if dataset == "voc2007":
        assert results["svm"]["train_split"] == "trainval"
        assert "aeroplane" in results["svm"]["details"]["per_class_ap"]
        assert "cow" in results["svm"]["details"]["skipped_classes"]  # no positives in the fixture


def test_cli_points_at_missing_dataset_parts(model_path, tmp_path, capsys):
    make_imagefolder(tmp_path / "if")
    import shutil

    shutil.rmtree(tmp_path / "if" / "train")
    rc = _cli(["knn", "--checkpoint", str(model_path), "--dataset", "imagefolder", "--data-root", str(tmp_path / "if"),
               "--out", str(tmp_path / "out"), *FAST])
    assert rc == 2 and "no train/ folder" in capsys.readouterr().err
    rc = _cli(["knn", "--checkpoint", str(model_path), "--data-root", str(tmp_path / "if"), *FAST])
    assert rc == 2 and "--data-root needs --dataset" in capsys.readouterr().err


def test_voc_root_moves_svm_and_fewshot_to_voc2007(model_path, tmp_path):
    """An ImageFolder run with --voc-root: kNN stays on the photos, SVM and few-shot run the VOC07 protocol."""
    make_imagefolder(tmp_path / "photos")
    make_voc2007(tmp_path / "voc")
    report = tmp_path / "report.json"
    rc = _cli(["knn", "svm", "fewshot", "--checkpoint", str(model_path), "--dataset", "imagefolder",
               "--data-root", str(tmp_path / "photos"), "--voc-root", str(tmp_path / "voc"),
               "--out", str(tmp_path / "out"), "--report", str(report), *FAST])
    assert rc == 0
    results = json.loads(report.read_text())["results"]
    assert results["knn"]["dataset"] == "imagefolder"
    for name in ("svm", "fewshot"):
        r = results[name]
        assert (r["dataset"], r["data_root"], r["train_split"]) == ("voc2007", str(tmp_path / "voc"), "trainval")
        assert (r["n_train"], r["n_test"]) == (24, 16) and 0 <= r["value"] <= 1
    md = (tmp_path / "out" / "eval.md").read_text()
    assert f"| svm | {results['svm']['source']} |" in md and f"voc2007 {tmp_path / 'voc'}, trainval" in md
