"""`bssl run --preset smoke` end to end, as CI's proof that the whole path works; then resume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def bssl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bssl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=1500)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    r = bssl("run", "--preset", "smoke", "--out", "run", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "run", r


def test_run_folder_holds_every_artifact(smoke_run):
    out, r = smoke_run
    report = json.loads((out / "report.json").read_text())
    # checkpoints
    assert (out / "teacher").is_dir() and any((out / "teacher").glob("*.pt"))
    assert (out / "distill" / "student.pt").is_file()
    assert len(report["distill"]["stage_checkpoints"]) == 2
    # exports, each one a real file of the size reported
    formats = {e["format"] for e in report["export"]}
    assert {"bssl", "onnx", "onnx-packed", "tvm"} <= formats
    for e in report["export"]:
        p = Path(e["path"])
        p = p if p.is_absolute() else out.parent / p  # relative to where bssl run was started
        assert p.is_file() and p.stat().st_size == e["bytes"]
    # the packed ONNX carries 1-bit weights: much smaller than the FP32 ONNX
    size = {e["format"]: e["bytes"] for e in report["export"]}
    assert size["onnx-packed"] < size["onnx"] / 5
    # measurements and evaluation
    assert report["profile"]["bops"] > 0 and report["profile"]["ops"] > 0
    assert report["bench"]["rows"]
    for who in ("student", "teacher", "random-init student"):
        assert set(report["eval"][who]) >= {"linear", "knn", "svm", "fewshot"} or \
            set(report["eval"][who].get("results", {})) >= {"linear", "knn", "svm", "fewshot"}
    # the deployable classifier of the data's own classes, scored on its exported files
    clf = report["classifier"]
    assert (out / "classifier" / "classifier.pt").is_file()
    rows = {(r["model"], r["format"]): r for r in clf["rows"]}
    assert set(rows) == {("binary student", "bssl"), ("binary student", "onnx"), ("FP teacher", "onnx"),
                         ("FP teacher", "onnx-int8")}
    for key, row in rows.items():
        acc = row["accuracy"]["accuracy"]
        assert 0.0 <= acc["value"] <= 1.0, key
        assert Path(row["export"]["path"]).stat().st_size == row["export"]["bytes"], key
        if key[0] == "binary student":  # the deployed files against the PyTorch classifier on the same images
            assert acc["details"]["compare"]["top1_agreement"] > 0.9, key
    assert rows[("binary student", "bssl")]["latency_ms"]["p50"] > 0
    assert rows[("FP teacher", "onnx-int8")]["latency_ms"]["p50"] > 0
    # the int8 file is the FP32 one quantised: about a quarter of its size, same classes in its metadata
    assert rows[("FP teacher", "onnx-int8")]["export"]["bytes"] < 0.4 * rows[("FP teacher", "onnx")]["export"]["bytes"]
    assert "runtime" in {r["backend"] for r in report["bench"]["rows"]}
    # human report with tables and plots
    md = (out / "report.md").read_text()
    assert "## Downstream evaluation" in md and "## Latency and memory" in md and "## Deployed classifier" in md
    pngs = list(out.rglob("*.png"))
    assert any(p.name == "teacher.png" for p in pngs) and any("distill" in str(p) for p in pngs)
    # the Markdown is also printed for the user
    assert "# bssl run report" in r.stdout


def test_resume_skips_finished_steps_and_redoes_missing_ones(smoke_run):
    out, _ = smoke_run
    state_path = out / "state.json"
    state = json.loads(state_path.read_text())
    before = json.loads((out / "report.json").read_text())["eval"]
    # pretend the run stopped before evaluation
    del state["steps"]["eval"], state["steps"]["report"]
    state_path.write_text(json.dumps(state))
    r = bssl("run", "--preset", "smoke", "--out", str(out), "--resume", cwd=out.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("teacher", "distill", "export", "profile", "bench"):
        assert f"{step}: already done" in r.stdout
    assert "eval: done" in r.stdout
    after = json.loads((out / "report.json").read_text())["eval"]
    # seeded: the same numbers again (up to float summation order in multi-threaded BLAS)
    for who in before:
        for protocol in before[who]:
            assert after[who][protocol]["value"] == pytest.approx(before[who][protocol]["value"], abs=1e-6), (who, protocol)


def test_resume_with_another_config_is_refused(smoke_run):
    out, _ = smoke_run
    r = bssl("run", "--preset", "smoke", "--out", str(out), "--resume", "--set", "distill.width=0.25", cwd=out.parent)
    assert r.returncode == 2 and "config differs" in r.stderr
