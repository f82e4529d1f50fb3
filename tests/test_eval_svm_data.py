"""SVM / few-shot on the run's own data: the dataset selection rule, the capped stratified subsample, and the
dataset/split labels every result and report row carries. Tiny fixtures, no network, seconds each."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bssl.data.subset import stratified_rows
from bssl.errors import UserError
from bssl.eval import data_label, evaluate, format_comparison, format_table, svm_dataset
from bssl.eval.features import Features
from bssl.eval.fewshot import fewshot_protocol
from bssl.eval.metrics import mean_average_precision, one_hot_labels
from bssl.eval.svm import svm_protocol


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def photo_folder(root, classes=("cat", "dog", "fish"), per_class=(6, 4)):
    """root/{train,val}/<class>/*.png (no val/ when its count is 0), each class a colour plus noise."""
    rng = np.random.default_rng(0)
    colours = {"cat": (200, 60, 60), "dog": (60, 200, 60), "fish": (60, 60, 200)}
    for split, n in zip(("train", "val"), per_class):
        for cls in classes if n else ():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colours[cls]) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    return root


def fast_cfg(dataset="shapes", root=None, **evals):
    ecfg = dict(jobs=1, svm_costs=[0.1, 1.0], svm_folds=2, fewshot_k=[1, 2], fewshot_samples=2, fewshot_costs=[1.0],
                knn_k=5, cache=False)
    ecfg.update(evals)
    return {"run": {"seed": 0, "device": "cpu"},
            "data": {"dataset": dataset, "root": root, "image_size": 16, "num_classes": 10, "num_train": 60,
                     "num_test": 40, "batch_size": 32},
            "eval": ecfg}


# --- the selection rule -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, root, evals, expected", [
    ("imagefolder", "/data/photos", {}, ("imagefolder", "/data/photos")),
    ("cifar10", "/data/cifar", {}, ("cifar10", "/data/cifar")),
    ("stl10", "/data/stl", {"voc_root": ""}, ("stl10", "/data/stl")),
    ("digits", None, {}, ("digits", None)),
    ("shapes", None, {}, ("shapes-multilabel", None)),
    ("imagefolder", "/data/photos", {"voc_root": "/data/VOC2007"}, ("voc2007", "/data/VOC2007")),
    ("shapes", None, {"voc_root": "/data/VOC2007"}, ("voc2007", "/data/VOC2007")),
    ("voc2007", "/data/voc", {}, ("voc2007", "/data/voc")),
    ("imagefolder", "/data/photos", {"svm_dataset": "shapes-multilabel"}, ("shapes-multilabel", None)),
    ("imagefolder", "/data/photos", {"svm_dataset": "imagefolder", "voc_root": "/v"}, ("imagefolder", "/data/photos")),
    ("imagefolder", "/data/photos", {"svm_dataset": "voc2007", "voc_root": "/v"}, ("voc2007", "/v")),
    ("voc2007", "/data/voc", {"svm_dataset": "voc2007"}, ("voc2007", "/data/voc")),
])
def test_svm_dataset_picks_the_runs_data_voc_or_shapes(dataset, root, evals, expected):
    assert svm_dataset(fast_cfg(dataset, root, **evals)) == expected


@pytest.mark.parametrize("evals, match", [
    ({"svm_dataset": "voc2007"}, "eval.voc_root"),
    ({"svm_dataset": "cifar10"}, "on-disk dataset other than the run's"),
    ({"svm_dataset": "voc2008"}, "voc2008"),
])
def test_svm_dataset_refuses_what_it_cannot_find(evals, match):
    with pytest.raises(UserError, match=match):
        svm_dataset(fast_cfg("imagefolder", "/data/photos", **evals))


# --- subsample ----------------------------------------------------------------------------------------------

def test_stratified_rows_keep_class_shares_and_every_class():
    labels = np.r_[np.zeros(700, int), np.ones(250, int), np.full(50, 2)]
    rows = stratified_rows(labels, 100, seed=3)
    assert len(rows) == 100 and len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [70, 25, 5]
    np.testing.assert_array_equal(rows, stratified_rows(labels, 100, seed=3))  # seeded
    assert not np.array_equal(rows, stratified_rows(labels, 100, seed=4))
    rare = np.r_[np.zeros(998, int), 1, 2]  # a tiny share still keeps one positive per class
    assert set(rare[stratified_rows(rare, 10, seed=0)]) == {0, 1, 2}
    assert len(stratified_rows(labels, 5000, seed=0)) == len(labels)


# --- one-vs-rest on single-label features -------------------------------------------------------------------

def test_one_vs_rest_map_by_hand():
    # class 0 ranks its two positives 1st and 3rd: AP = (1 + 2/3) / 2; class 1 ranks its positive 1st: AP = 1
    scores = np.array([[0.9, 0.1], [0.5, 0.8], [0.4, 0.3]])
    m, aps = mean_average_precision(scores, one_hot_labels(np.array([0, 1, 0]), 2))
    assert aps.tolist() == pytest.approx([(1 + 2 / 3) / 2, 1.0]) and m == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def single_label_features(n_per_class, seed, classes=("a", "b", "c", "d")):
    centres = np.random.default_rng(42).normal(0, 1, (len(classes), 12))  # the same classes in both splits
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(classes)), n_per_class)
    x = (centres[y] + rng.normal(0, 0.8, (len(y), 12))).astype(np.float32)
    return Features(x, y, list(classes), multilabel=False)


def test_single_label_svm_and_fewshot_give_finite_map():
    train, test = single_label_features(12, 0), single_label_features(6, 1)
    svm = svm_protocol(train, test, costs=[0.1, 1.0], folds=3, n_jobs=1)
    assert 0 <= svm["value"] <= 1 and np.isfinite(svm["value"]) and svm["value"] > 0.5
    assert set(svm["details"]["per_class_ap"]) == {"a", "b", "c", "d"} and 0 <= svm["details"]["accuracy"] <= 1
    few = fewshot_protocol(train, test, ks=[1, 4], samples=3, costs=[1.0], n_jobs=1)
    for row in few["details"]["per_k"].values():
        assert 0 <= row["mAP_mean"] <= 1 and np.isfinite(row["mAP_std"]) and len(row["mAP_samples"]) == 3


def test_imagefolder_run_evaluates_svm_and_fewshot_on_its_own_photos(tmp_path):
    root = photo_folder(tmp_path / "photos")
    cfg = fast_cfg("imagefolder", str(root))
    res = evaluate(tiny_net(), cfg, ["knn", "svm", "fewshot"], tmp_path / "out")
    for name in ("knn", "svm", "fewshot"):
        r = res[name]
        assert np.isfinite(r["value"]) and 0 <= r["value"] <= 1, name
        # the held-out split is named by what it resolved to: the val/ folder
        assert (r["dataset"], r["data_root"], r["train_split"], r["test_split"]) == ("imagefolder", str(root), "train", "val")
        assert (r["n_train"], r["n_test"]) == (18, 12)
        assert r["source"] == f"imagefolder {root}, train → val/ (18 / 12 images)"
    assert set(res["svm"]["details"]["per_class_ap"]) == {"cat", "dog", "fish"}
    assert set(res["fewshot"]["details"]["per_k"]) == {"1", "2"}
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())["results"]["svm"]
    assert {"dataset", "train_split", "test_split", "n_train", "n_test", "sampling", "source"} <= set(saved)
    md = (tmp_path / "out" / "eval.md").read_text()
    assert f"| svm | {res['svm']['source']} | mAP (%) |" in md and f"data: {res['fewshot']['source']}" in md


def test_folder_without_val_names_its_seeded_holdout(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=(10, 0))
    res = evaluate(tiny_net(), fast_cfg("imagefolder", str(root)), ["svm"], tmp_path / "out")["svm"]
    assert (res["n_train"], res["n_test"]) == (27, 3) and np.isfinite(res["value"])
    assert "train → held-out 10% of train/ (seed 0) (27 / 3 images)" in res["source"]


def test_svm_cap_takes_a_seeded_stratified_subsample(tmp_path):
    root = photo_folder(tmp_path / "photos")
    cfg = fast_cfg("imagefolder", str(root), svm_max_train=9, svm_max_test=0)
    res = evaluate(tiny_net(), cfg, ["knn", "svm", "fewshot"], tmp_path / "out")
    svm, tr = res["svm"], "train"
    assert (svm["n_train"], svm["n_test"]) == (9, 12) and res["knn"]["n_train"] == 18  # only the SVM set is capped
    assert svm["sampling"][tr] == {"method": "stratified", "used": 9, "available": 18, "seed": 0}
    assert "9 of 18 / 12 images" in svm["source"] and "stratified subsample (seed 0)" in svm["source"]
    assert res["fewshot"]["n_train"] == 9 and np.isfinite(res["fewshot"]["value"])
    # the subsample of a fresh context (no full-split features in memory) holds the same images
    alone = evaluate(tiny_net(), cfg, ["svm"], tmp_path / "alone")
    assert alone["svm"]["value"] == pytest.approx(svm["value"], abs=1e-6)
    with pytest.raises(UserError, match="svm_max_train"):
        evaluate(tiny_net(), fast_cfg("imagefolder", str(root), svm_max_train=-1), ["svm"], tmp_path / "bad")


def test_shapes_run_keeps_the_multilabel_set_capped(tmp_path):
    res = evaluate(tiny_net(), fast_cfg(svm_max_train=48), ["svm"], tmp_path)
    svm = res["svm"]
    assert svm["dataset"] == "shapes-multilabel" and (svm["n_train"], svm["n_test"]) == (48, 40)
    assert svm["sampling"]["train"]["method"] == "first" and "48 of 60" in svm["source"]


# --- reports ------------------------------------------------------------------------------------------------

def _result(metric, value, source):
    return {"metric": metric, "value": value, "source": source, "details": {}}


def test_every_report_row_names_its_data(tmp_path):
    from bssl.report import render_markdown

    photos = "imagefolder /data/photos, train → val (1,000 / 500 images)"
    voc = "voc2007 /data/VOC2007, trainval → test (5,011 / 4,952 images)"
    ev = {who: {"knn": _result("top1", v, photos), "svm": _result("mAP", v / 2, voc),
                "rankme": _result("rank", 7.5, "imagefolder /data/photos, train (1,000 images)")}
          for who, v in (("student", 0.4), ("teacher", 0.6))}
    report = {"preset": "cpu", "bssl_version": "x", "eval": ev,
              "config": {"run": {"seed": 0}, "data": {"dataset": "imagefolder", "root": "/data/photos", "image_size": 32}},
              "teacher": {"method": "mocov2", "knn_acc": 0.5, "checkpoint": "t.pt"},
              "distill": {"history": [{"loss": 1.0}], "checkpoint": "s.pt", "stage_checkpoints": ["a", "b"]}}
    md = render_markdown(report, tmp_path)
    assert f"| kNN top1 (%) | {photos} | 40 | 60 |" in md
    assert f"| SVM mAP (%) | {voc} | 20 | 30 |" in md
    assert "| RankMe rank | imagefolder /data/photos, train (1,000 images) | 7.5 | 7.5 |" in md
    assert "imagefolder /data/photos, train → held-out split" in md  # the teacher's kNN monitor
    assert "| 2 | 1 | imagefolder /data/photos, train |" in md  # distillation loss
    # eval's own tables: the summary and the comparison of models
    table = format_table(ev["student"])
    assert f"| svm | {voc} | mAP (%) | 20.00 |" in table
    cmp = format_comparison({"a": ev["student"], "b": {"knn": _result("top1", 0.1, "shapes, train → test (9 / 9 images)")}})
    assert f"| knn | {photos} | top1 (%) | 40.00 | n/a |" in cmp
    assert "| knn | shapes, train → test (9 / 9 images) | top1 (%) | n/a | 10.00 |" in cmp  # other data, other row
    assert data_label({"dataset": "digits"}) == "digits" and data_label({"source": "a|b"}) == "a\\|b"
    report["config"]["data"]["train_subset"] = 5000
    assert "| 2 | 1 | imagefolder /data/photos, train (at most 5,000 images, stratified subset, seed 0) |" in \
        render_markdown(report, tmp_path)


def test_train_subset_is_the_same_images_in_training_and_evaluation(tmp_path):
    """data.train_subset: the distillation's train split and the evaluation's train features are one draw."""
    from bssl.data import dataset_from_config
    from bssl.eval.context import EvalContext
    from bssl.eval.features import as_extractor

    root = photo_folder(tmp_path / "photos", per_class=(6, 4))
    cfg = fast_cfg("imagefolder", str(root))
    cfg["data"]["train_subset"] = 9
    train = dataset_from_config(cfg, "train")
    assert len(train) == 9 and sorted(np.bincount(train.targets).tolist()) == [3, 3, 3]
    assert len(dataset_from_config(cfg, "heldout")) == 12  # the held-out split is never subsampled
    ctx = EvalContext(as_extractor(tiny_net(), input_size=16), cfg, tmp_path / "eval")
    feats = ctx.features("imagefolder", "train", str(root))
    assert feats.meta["sample"]["used"] == 9 and feats.meta["sample"]["available"] == 18
    assert np.array_equal(np.asarray(feats.targets), np.asarray(train.targets))
