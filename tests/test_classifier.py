"""Classifiers: `bssl eval linear|semisup --save`, export of a classifier, `bssl predict`, `bssl eval accuracy`."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from bssl.classifier import (FILE_NAME, fold_standardization, folded_head, load_classifier, load_predictor,
                             make_classifier, preprocess_info, save_classifier)
from bssl.cli import main
from bssl.models import build_model, save_student

CLASSES = ("apple", "boat", "cloud")
COLOURS = {"apple": (200, 30, 30), "boat": (30, 30, 200), "cloud": (230, 230, 230)}
FAST = ["--preset", "smoke", "--set", "eval.linear_epochs=3", "--set", "data.batch_size=16", "--set", "eval.jobs=1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_folder(root, classes=CLASSES, per_class=4, seed=0):
    """A tiny ImageFolder of JPEGs (train/ and val/), each class a noisy colour, sizes that need a resize."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                size = (20 + 4 * (i % 3), 18 + 2 * i)
                base = np.array(COLOURS.get(cls, (100, 160, 60)), dtype=np.int16)
                img = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i}.jpg", "JPEG")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny student checkpoint, an image folder, and a classifier saved by `bssl eval linear --save`."""
    tmp = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    student = build_model("reactnet-a", width=0.125, stem="small", input_size=32, num_classes=64)
    save_student(tmp / "student.pt", student, {})
    root = write_folder(tmp / "photos")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["eval", "linear", "--checkpoint", str(tmp / "student.pt"), "--dataset", "imagefolder",
                   "--data-root", str(root), "--out", str(tmp / "eval"), "--save", str(tmp / "clf"),
                   "--set", "eval.linear_norm=standardize", *FAST])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    return {"tmp": tmp, "student": tmp / "student.pt", "root": root, "clf": tmp / "clf" / FILE_NAME,
            "eval": json.loads((tmp / "eval" / "eval.json").read_text())["results"]["linear"]}


@pytest.fixture(scope="module")
def onnx_path(world):
    from bssl.export import export_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = export_model(world["clf"], "onnx", world["tmp"] / "exports", check_samples=4)
    finally:
        torch.set_num_threads(n)
    assert res["classes"] == list(CLASSES)
    assert res["equivalence"]["top1_agreement"] == 1.0 and res["equivalence"]["max_rel_error"] < 1e-4
    return world["tmp"] / "exports" / "model.onnx"


def test_folded_standardization_equals_probe_on_standardized_features():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(50, 24, generator=g, dtype=torch.float64) * 7 + 3
    mean, std = feats.mean(0).float(), feats.std(0).float() + 1e-6
    fc = nn.Linear(24, 5)
    probe = fc(((feats.float() - mean) / std))
    head = folded_head(fc, (mean, std))
    assert torch.allclose(head(feats.float()), probe, atol=1e-4, rtol=1e-5)
    w, b = fold_standardization(fc.weight, fc.bias, mean, std)  # the exact algebra in float64
    exact = feats @ w.double().T + b.double()
    ref = ((feats - mean.double()) / std.double()) @ fc.weight.double().T + fc.bias.double()
    assert torch.allclose(exact, ref, atol=1e-4)
    assert torch.equal(folded_head(fc, None).weight, fc.weight.detach())


def test_probe_head_folded_on_raw_features_equals_probe_on_standardized_features():
    from bssl.eval.features import Features
    from bssl.eval.linear import _batch, train_linear

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(60, 16)) * rng.uniform(0.1, 20, size=16) + rng.normal(size=16) * 5).astype(np.float32)
    y = rng.integers(0, 3, size=60)
    train, test = Features(x[:40], y[:40], list("abc"), False), Features(x[40:], y[40:], list("abc"), False)
    keep = {}
    res = train_linear(train, test, epochs=3, lr=0.5, norm="standardize", keep=keep)
    with torch.no_grad():
        probe = keep["fc"](_batch(x, np.arange(60), "standardize", keep["stats"]))
        folded = folded_head(keep["fc"], keep["stats"])(torch.from_numpy(x))
    assert torch.allclose(folded, probe, atol=1e-4, rtol=1e-4)
    assert torch.equal(folded.argmax(1), probe.argmax(1))
    assert (folded[40:].argmax(1).numpy() == y[40:]).mean() == pytest.approx(res["value"])


def test_saved_classifier_has_the_probe_head_and_its_accuracy(world):
    model = load_classifier(world["clf"])
    info = model.classifier_info
    assert info["classes"] == list(CLASSES) and model.classifier.out_features == 3
    assert info["preprocess"]["input_size"] == 32 and info["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    acc, res = info["accuracy"], world["eval"]
    assert acc["top1"] == pytest.approx(res["value"]) and acc["dataset"] == "imagefolder"
    assert acc["test_split"] == "val" and acc["n_test"] == 12 and acc["source"] == res["source"]
    # the standardisation was folded: the head on raw features scores the held-out split as the probe did
    assert acc["folded_head_top1"] == pytest.approx(res["value"])
    assert info["training"]["protocol"] == "linear" and info["training"]["folded_standardization"]
    # the student is the frozen one: every tensor but the head is unchanged
    student = torch.load(world["student"], weights_only=True)["state_dict"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in student.items() if not k.startswith("classifier."))
    summary = json.loads((world["clf"].parent / "classifier.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["accuracy"]["top1"] == pytest.approx(res["value"])


def test_save_refuses_an_existing_classifier_without_force(world, capsys, tmp_path):
    before = world["clf"].read_bytes()
    args = ["eval", "linear", "--checkpoint", str(world["student"]), "--dataset", "imagefolder",
            "--data-root", str(world["root"]), "--out", str(tmp_path / "e"), "--save", str(world["clf"].parent), *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a classifier" in err and "--force" in err
    assert world["clf"].read_bytes() == before and not (tmp_path / "e").exists()


@pytest.mark.parametrize("extra, needle", [
    (["linear", "semisup"], "exactly one of linear or semisup"),
    (["knn"], "exactly one of linear or semisup"),
])
def test_save_needs_one_trainable_protocol(world, capsys, tmp_path, extra, needle):
    rc = main(["eval", *extra, "--checkpoint", str(world["student"]), "--dataset", "imagefolder",
               "--data-root", str(world["root"]), "--out", str(tmp_path / "e"), "--save", str(tmp_path / "c"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and not (tmp_path / "c").exists()


def test_export_onnx_carries_class_names_and_predict_names_them(world, onnx_path, capsys):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["bssl.classes"]) == list(CLASSES) and props["bssl.kind"] == "classifier"
    img = world["root"] / "val" / "boat" / "1.jpg"
    for model in (onnx_path, world["clf"]):
        assert main(["predict", str(model), str(img), str(world["root"] / "val" / "apple"), "--json", "--top", "2"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 5 and rows[0]["image"] == str(img)
        assert all(len(r["top"]) == 2 and {t["class"] for t in r["top"]} <= set(CLASSES) for r in rows)
        assert sum(t["probability"] for t in rows[0]["top"]) <= 1.0 + 1e-9
    onnx_rows = json.loads(json.dumps(rows))  # text mode prints the same classes
    assert main(["predict", str(onnx_path), str(img)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == str(img) and len(text) == 4 and text[1].split()[0] in CLASSES
    # the deployed file and the checkpoint agree on the probabilities
    a = load_predictor(onnx_path)
    b = load_predictor(world["clf"])
    from bssl.classifier import load_images

    x = load_images([img], a.preprocess).numpy()
    assert np.allclose(a.logits(x), b.logits(x), atol=1e-4) and onnx_rows


def test_eval_accuracy_of_the_export_beside_the_checkpoint(world, onnx_path, tmp_path, capsys):
    report = tmp_path / "acc.json"
    rc = main(["eval", "accuracy", "--checkpoint", str(onnx_path), "--compare", str(world["clf"]),
               "--dataset", "imagefolder", "--data-root", str(world["root"]), "--out", str(tmp_path / "out"),
               "--report", str(report), *FAST])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads(report.read_text())["results"]["accuracy"]
    assert res["test_split"] == "val" and res["n_test"] == 12 and res["details"]["runtime"] == "onnxruntime"
    assert res["details"]["compare"]["top1_agreement"] == 1.0
    assert res["value"] == pytest.approx(res["details"]["compare"]["top1"])
    # measured on the deployed file, it matches what the probe measured when the head was trained
    assert res["value"] == pytest.approx(world["eval"]["value"])
    assert res["details"]["trained"]["top1"] == pytest.approx(world["eval"]["value"])
    assert "model.onnx (onnxruntime): top-1" in out and "classifier.pt (pytorch)" in out and "at training" in out


def test_eval_accuracy_refuses_a_dataset_with_other_classes(world, onnx_path, tmp_path, capsys):
    other = write_folder(tmp_path / "two", classes=("apple", "boat"), per_class=2)
    rc = main(["eval", "accuracy", "--checkpoint", str(onnx_path), "--dataset", "imagefolder",
               "--data-root", str(other), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "3 classes" in err and "has 2" in err


def test_predict_bad_inputs_are_one_line(world, onnx_path, tmp_path, capsys):
    import onnx

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    plain = tmp_path / "plain.onnx"  # an export without classifier metadata, as a plain student's
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    img = str(world["root"] / "val" / "cloud" / "0.jpg")
    cases = [
        ([str(onnx_path), str(broken)], "cannot be decoded"),
        ([str(world["student"]), img], "bssl eval linear"),
        ([str(plain), img], "bssl eval linear"),
        ([str(onnx_path), img, "--input-size", "64"], "built for 32 px"),
        ([str(onnx_path), str(tmp_path / "missing.jpg")], "does not exist"),
    ]
    for args, needle in cases:
        assert main(["predict", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (args, err)


def test_semisup_save_keeps_the_fine_tuned_student(world, tmp_path):
    rc = main(["eval", "semisup", "--checkpoint", str(world["student"]), "--dataset", "imagefolder",
               "--data-root", str(world["root"]), "--out", str(tmp_path / "e"), "--save", str(tmp_path / "c"),
               "--set", "eval.semisup_fractions=[1.0]", "--set", "eval.semisup_lrs=[0.01,0.001]",
               "--set", "eval.semisup_head_mults=[10]", "--set", "eval.semisup_batch_size=8", *FAST])
    assert rc == 0
    res = json.loads((tmp_path / "e" / "eval.json").read_text())["results"]["semisup"]
    model = load_classifier(tmp_path / "c" / FILE_NAME)
    info = model.classifier_info
    best = res["details"]["per_fraction"]["1.0"]["best"]
    assert info["classes"] == list(CLASSES) and info["accuracy"]["top1"] == pytest.approx(res["value"])
    assert info["training"]["protocol"] == "semisup" and info["training"]["lr"] == best["lr"]
    student = torch.load(world["student"], weights_only=True)["state_dict"]
    state = model.state_dict()
    assert any(not torch.equal(state[k], v) for k, v in student.items() if k.startswith("stem"))  # fine-tuned


def test_make_and_save_classifier_roundtrip(tmp_path):
    torch.manual_seed(0)
    student = build_model("reactnet-a", width=0.125, stem="small", input_size=32, num_classes=16)
    clf = make_classifier(student, nn.Linear(student.classifier.in_features, 2), ["no", "yes"],
                          {"preprocess": preprocess_info(32, None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))})
    path = save_classifier(tmp_path / "x" / FILE_NAME, clf, {})
    back = load_classifier(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), clf.eval()(x)) and back.spec["num_classes"] == 2
    assert back.classifier_info["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(Exception, match="--force"):
        save_classifier(path, clf, {})
    assert student.classifier.out_features == 16  # the student itself is untouched


def test_export_bssl_carries_class_names_for_the_native_runtime(world, tmp_path, capsys):
    from bssl import runtime

    if not runtime.available():
        pytest.skip("libbssl_runtime is not built")
    assert main(["export", "--checkpoint", str(world["clf"]), "--format", "bssl", "--out", str(tmp_path),
                 "--check-samples", "2"]) == 0
    assert "3 classes" in capsys.readouterr().out
    path = tmp_path / "model.bssl"
    with runtime.load(path) as m:
        assert m.class_names == list(CLASSES) and m.num_classes == 3
    (tmp_path / "model.bssl.json").unlink()  # the header alone names the classes
    img = str(world["root"] / "val" / "apple" / "2.jpg")
    outs = []
    for model in (path, world["clf"]):
        assert main(["predict", str(model), img, "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)[0]["top"])
    assert [t["class"] for t in outs[0]] == [t["class"] for t in outs[1]]
    assert np.allclose([t["probability"] for t in outs[0]], [t["probability"] for t in outs[1]], atol=1e-4)


def test_fp_reference_classifier_onnx_and_int8_score_what_the_probe_scored(world, tmp_path):
    """The FP reference of `bssl run`'s classifier table: a float backbone + the probe's folded head as ONNX FP32,
    scoring on the held-out images what the probe scored on their features, then quantised to int8."""
    from bssl.bench.onnx_files import quantize_int8
    from bssl.classifier import FloatClassifierTarget, calibration_batches, evaluate_accuracy
    from bssl.config import apply_overrides, load_preset
    from bssl.eval import evaluate

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    cfg = apply_overrides(load_preset("smoke"), ["data.dataset=imagefolder", f"data.root={world['root']}",
                                                 "eval.linear_epochs=3", "eval.jobs=1", "eval.linear_norm=standardize"])
    target = FloatClassifierTarget(tmp_path / "fp", config=cfg)
    res = evaluate(backbone, cfg, ["linear"], tmp_path / "eval", save=target)
    fp32 = tmp_path / "fp" / "model.onnx"
    assert target.saved == fp32 and target.export["equivalence"]["top1_agreement"] == 1.0
    pred = load_predictor(fp32)
    assert pred.classes == list(CLASSES) and pred.input_size == 32
    acc = evaluate_accuracy(fp32, cfg, tmp_path / "acc")["accuracy"]
    # the deployed FP32 file on decoded images = the folded head on cached features = the probe
    assert acc["value"] == pytest.approx(target.info["accuracy"]["folded_head_top1"])
    assert acc["value"] == pytest.approx(res["linear"]["value"])
    int8 = quantize_int8(fp32, tmp_path / "fp" / "model.int8.onnx",
                         calibration_batches(cfg, pred.preprocess, tmp_path / "cal", count=8))
    assert load_predictor(int8).classes == list(CLASSES)  # the metadata survives quantisation
    assert int8.stat().st_size < fp32.stat().st_size
    acc8 = evaluate_accuracy(int8, cfg, tmp_path / "acc8")["accuracy"]
    assert 0.0 <= acc8["value"] <= 1.0


def test_lce_export_of_a_classifier_writes_the_class_sidecar(world, tmp_path):
    from bssl.export import larq_env

    if larq_env.find_larq_python() is None:
        pytest.skip("no larq environment (.larq-venv or $BSSL_LARQ_VENV)")
    assert main(["export", "--checkpoint", str(world["clf"]), "--format", "lce", "--out", str(tmp_path),
                 "--check-samples", "2"]) == 0
    side = json.loads((tmp_path / "model.tflite.json").read_text())
    assert side["classes"] == list(CLASSES) and side["format"] == "lce" and side["model"] == "model.tflite"
    assert side["preprocess"]["input_size"] == 32 and side["accuracy"]["top1"] is not None
