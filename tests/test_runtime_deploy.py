"""Deploying model.bssl: the float16 export flag, evaluating and benchmarking the file itself,
target folders with a static bssl-infer, and importing bssl-infer --json results from a board."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import bssl.runtime as rt
from bssl.cli import main
from bssl.deploy.model_file import DTYPES, read_header
from bssl.models import build_model, save_student
from conftest import trained_looking

if not rt.available():
    pytest.skip("native runtime library not built (pip install -e .)", allow_module_level=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def student(name="reactnet-a", size=32, width=0.25, classes=10, seed=0):
    torch.manual_seed(seed)
    return trained_looking(build_model(name, num_classes=classes, input_size=size, width=width, pad_value=1.0))


def tensor_dtypes(path: Path):
    data = path.read_bytes()
    h = read_header(data)
    return [struct.unpack_from("<I", data, h["tensors_off"] + 32 * i)[0] for i in range(h["n_tensors"])]


def test_export_cli_float16(tmp_path):
    ckpt = tmp_path / "student.pt"
    save_student(ckpt, student(), {})
    for flag, out in (([], "f32"), (["--float16"], "f16")):
        rc = main(["export", "--checkpoint", str(ckpt), "--format", "bssl", "--out", str(tmp_path / out),
                   "--check-samples", "8", *flag])
        assert rc == 0
    f32, f16 = tmp_path / "f32" / "model.bssl", tmp_path / "f16" / "model.bssl"
    d32, d16 = tensor_dtypes(f32), tensor_dtypes(f16)
    # only the classifier head (weight and bias) is float16: everything before the last sign stays float32
    assert DTYPES["f16"] not in d32 and d16.count(DTYPES["f16"]) == 2
    assert d32.count(DTYPES["bits"]) == d16.count(DTYPES["bits"]) > 0
    assert f16.stat().st_size < f32.stat().st_size
    report = json.loads((tmp_path / "f16" / "export.json").read_text())
    assert report["exports"][0]["float16"] is True and report["exports"][0]["equivalence"]["top1_agreement"] == 1.0


def _eval_cfg():
    from bssl.config import load_preset

    cfg = load_preset("smoke")
    cfg["data"].update(num_train=96, num_test=64)
    cfg["eval"].update(knn_k=10, linear_epochs=3, jobs=1, threads=1)
    return cfg


def test_eval_through_bssl_file_matches_student(tmp_path):
    """kNN and linear probe on a tiny dataset through model.bssl (native runtime features) give the
    student's numbers: the runtime's features differ from PyTorch's only by float rounding
    (docs/model-format.md), which can move a sample's sign bit, so a kNN vote may flip for an
    input or two and the linear probe (trained by SGD on the features) moves by about as much."""
    from bssl.eval import evaluate, load_feature_extractor
    from bssl.eval.features import RuntimeExtractor, TorchExtractor
    from bssl.export import export_model

    m = student()
    ckpt = tmp_path / "student.pt"
    save_student(ckpt, m, {"data": {"image_size": 32}})
    export_model(ckpt, "bssl", tmp_path / "exp", check_samples=0)
    path = tmp_path / "exp" / "model.bssl"
    ex_rt, ex_pt = load_feature_extractor(path), load_feature_extractor(ckpt)
    assert isinstance(ex_rt, RuntimeExtractor) and isinstance(ex_pt, TorchExtractor)
    assert ex_rt.input_size == ex_pt.input_size == 32 and ex_rt.key != ex_pt.key
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    f_rt, f_pt = ex_rt(x), ex_pt(x)
    assert f_rt.shape == f_pt.shape
    rel = np.abs(f_rt - f_pt).max(axis=1) / np.abs(f_pt).max(axis=1)
    assert np.median(rel) < 1e-4

    cfg = _eval_cfg()
    res_rt = evaluate(path, cfg, ["knn", "linear"], tmp_path / "e_rt")
    res_pt = evaluate(ckpt, cfg, ["knn", "linear"], tmp_path / "e_pt")
    n_test = cfg["data"]["num_test"]
    for proto in ("knn", "linear"):
        assert res_rt[proto]["metric"] == res_pt[proto]["metric"] == "top1"
        a, b = res_rt[proto]["value"], res_pt[proto]["value"]
        assert abs(a - b) <= 2 / n_test + 1e-9, (proto, a, b)

    rc = main(["eval", "knn", "--checkpoint", str(path), "--preset", "smoke", "--out", str(tmp_path / "cli"),
               "--set", "data.num_train=96", "--set", "data.num_test=64", "--set", "eval.knn_k=10"])
    assert rc == 0
    report = json.loads((tmp_path / "cli" / "eval.json").read_text())
    assert report["results"]["knn"]["value"] == res_rt["knn"]["value"] and report["input_size"] == 32


def test_bench_takes_a_bssl_file(tmp_path):
    from bssl.bench.models import parse_model_ref
    from bssl.bench.runner import run_benchmarks
    from bssl.errors import UserError
    from bssl.export import export_model

    export_model(student(), "bssl", tmp_path, check_samples=0)
    path = tmp_path / "model.bssl"
    ref = parse_model_ref(str(path))
    assert ref.kind == "bssl" and ref.name == "reactnet-a"
    rep = run_benchmarks([str(path)], ["runtime", "torch"], input_size=32, runs=3, warmup=1, out_dir=tmp_path / "b",
                         batch_sizes=(1,), progress=False, memory=False)
    rows = {r["backend"]: r for r in rep["rows"]}
    assert rows["runtime"]["status"] == "ok" and rows["runtime"]["bytes"] == path.stat().st_size
    assert rows["runtime"]["artifact"] == str(path.resolve()) and rows["runtime"]["arch"] == "reactnet-a"
    assert rows["torch"]["status"] == "skipped"
    with pytest.raises(UserError, match="--input-size 32"):
        run_benchmarks([str(path)], ["runtime"], input_size=64, runs=1, warmup=0, out_dir=tmp_path / "c",
                       batch_sizes=(1,), progress=False, memory=False)
    (tmp_path / "bad.bssl").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a model.bssl"):
        parse_model_ref(str(tmp_path / "bad.bssl"))


def test_export_target_missing_compiler_writes_nothing(tmp_path, monkeypatch, capsys):
    import dataclasses

    from bssl.kernels import cross

    spec = cross.TARGETS["aarch64"]
    monkeypatch.setitem(cross.TARGETS, "aarch64", dataclasses.replace(spec, cc="bssl-test-no-such-gcc"))
    ckpt = tmp_path / "student.pt"
    save_student(ckpt, student(), {})
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "bssl", "--target", "aarch64", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "bssl-test-no-such-gcc is not installed" in err and "apt-get install -y gcc-aarch64-linux-gnu" in err
    assert list(out.iterdir()) == []
    assert main(["export", "--checkpoint", str(ckpt), "--format", "bssl", "--target", "riscv64", "--out", str(out)]) == 2
    assert "not a bssl target" in capsys.readouterr().err and list(out.iterdir()) == []


def test_export_target_x86_folder_runs_natively(tmp_path):
    import subprocess

    from bssl.export import export_model
    from bssl.kernels.cross import emulator_command

    if emulator_command("x86-64") != []:
        pytest.skip("not an x86-64 machine")
    res = export_model(student(), "bssl", tmp_path, target="x86-64", check_samples=4, float16=True)
    folder = tmp_path / "bssl-x86-64"
    assert res["target_check"]["identical"] and res["float16"] is True
    # replacing an existing folder: the new one wins, no temp folders are left beside it
    export_model(student(seed=1), "bssl", tmp_path, target="x86-64", check_samples=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bssl-x86-64"]
    r = subprocess.run([str(folder / "bssl-infer"), str(folder / "model.bssl"), "--repeat", "3", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["repeat"] == 3 and out["input_shape"] == [3, 32, 32] and out["machine"] == "x86_64"


def test_bench_imports_bssl_infer_json(tmp_path, capsys):
    """Loopback: this machine's bssl-infer --json, imported beside a runtime measurement of the same file."""
    import subprocess

    from bssl.export import export_model
    from bssl.kernels.cross import emulator_command

    if emulator_command("x86-64") != []:
        pytest.skip("not an x86-64 machine")
    export_model(student(), "bssl", tmp_path, target="x86-64", check_samples=0)
    folder = tmp_path / "bssl-x86-64"
    r = subprocess.run([str(folder / "bssl-infer"), str(folder / "model.bssl"), "--repeat", "15", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (tmp_path / "board.json").write_text(r.stdout)
    data = json.loads(r.stdout)
    assert data["min_ms"] <= data["p50_ms"] <= data["p90_ms"] <= data["max_ms"]
    report = tmp_path / "bench.json"
    rc = main(["bench", str(folder / "model.bssl"), "--backend", "runtime", "--input-size", "32", "--runs", "3",
               "--warmup", "1", "--batch", "1", "--no-memory", "--out", str(tmp_path / "b"), "--report", str(report),
               "--import-json", str(tmp_path / "board.json"), "--label", "loopback"])
    assert rc == 0
    rows = {r["backend"]: r for r in json.loads(report.read_text())["rows"]}
    assert rows["runtime"]["status"] == "ok"
    imp = rows["loopback"]
    assert imp["status"] == "ok" and imp["p50_ms"] == data["p50_ms"] and imp["p90_ms"] == data["p90_ms"]
    assert imp["bytes"] == (folder / "model.bssl").stat().st_size and imp["machine"] == "x86_64"
    assert imp["threads"] == 1 and imp["input_size"] == 32 and "arch" not in imp
    out = capsys.readouterr().out
    assert "| loopback |" in out and "| runtime |" in out

    # alone (nothing measured here), default label from the board's uname -m; bad files are one-line errors
    rc = main(["bench", "--import-json", str(tmp_path / "board.json"), "--out", str(tmp_path / "c")])
    assert rc == 0 and "| bssl-infer (x86_64) |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"p50_ms": 1.0}))
    assert main(["bench", "--import-json", str(tmp_path / "bad.json"), "--out", str(tmp_path / "d")]) == 2
    assert "not bssl-infer --json output" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "d")]) == 2


def test_arm_mca_script(tmp_path):
    """benchmarks/arm_mca.py extracts the NEON tile loop and models it (skips without llvm-mca)."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import arm_mca
    finally:
        sys.path.remove(str(root / "benchmarks"))
    if arm_mca.find_mca() is None or shutil.which(arm_mca.CC) is None:
        pytest.skip("llvm-mca or aarch64-linux-gnu-gcc missing: apt-get install -y llvm gcc-aarch64-linux-gnu")
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "arm_mca.py"), "--cpus", "cortex-a72",
                        "--json", str(tmp_path / "mca.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "mca.json").read_text())
    loop = res["bssl_loop"]
    assert loop["count"] == 16 and sum(i.split()[0] == "uadalp" for i in loop["instructions"]) == 16
    assert res["fp_loop"]["count"] >= 4
    for row in res["rows"]:
        assert row["work_per_iteration"] == 2048 and 0 < row["per_cycle"] <= row["ceiling_per_cycle"] * 1.001
    assert len(res["rows"]) == 2 and res["pi4"]["loops"] and "Raspberry Pi 4 estimate (a model)" in r.stdout
