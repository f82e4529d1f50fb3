"""benchmarks/ablation_bssl.py: results kept in --keep are reused and reported, with their teachers; bad input is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ablation_bssl
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return ablation_bssl


def _result(row, seed, knn, teacher="aaaaaaaaaaaa", cpu="CPU A"):
    return {"row": row, "seed": seed, "linear": knn + 0.01, "knn": knn, "svm": knn - 0.01, "teacher": teacher,
            "cpu": cpu, "total_seconds": 600.0, "grad_curve": [[0, 1.0], [1, 0.5]]}


def _keep(folder: Path, r):
    name = f"seed{r['seed']}" if isinstance(r["seed"], int) else r["seed"]
    (folder / r["row"]).mkdir(parents=True, exist_ok=True)
    (folder / r["row"] / f"{name}.json").write_text(json.dumps(r))


def test_kept_result_is_not_rerun(ablation, tmp_path):
    keep, out = tmp_path / "keep", tmp_path / "out"
    _keep(keep, _result("bssl", 0, 0.3))
    # a teacher path that does not exist: any attempt to distil would fail
    r = ablation.run_task({}, "bssl", 0, str(tmp_path / "missing.pt"), "x", str(out), str(keep), 1)
    assert r["knn"] == 0.3
    # a result in this run's --out wins over the kept copy
    (out / "bssl" / "seed0").mkdir(parents=True)
    (out / "bssl" / "seed0" / "result.json").write_text(json.dumps(_result("bssl", 0, 0.4)))
    assert ablation.run_task({}, "bssl", 0, "", "x", str(out), str(keep), 1)["knn"] == 0.4


def test_resumed_run_counts_the_epochs_of_every_invocation(ablation, tmp_path, one_torch_thread):
    """A run stopped after epoch 1 and finished by the ablation reports its whole time, not only the last part."""
    from bssl.config import apply_overrides, load_preset
    from bssl.distill import run_distill

    from conftest import write_teacher

    cfg = apply_overrides(load_preset("smoke"), ["data.num_train=32", "data.num_test=32", "distill.batch_size=16",
                                                 "run.device=\"cpu\""])
    teacher = write_teacher(tmp_path / "teacher.pt", cfg)
    out = tmp_path / "out"
    part = run_distill(ablation._row_cfg(cfg, "bssl", 0), teacher, out / "bssl" / "seed0", progress=False,
                       stop_after=1)
    r = ablation.run_task(cfg, "bssl", 0, str(teacher), "fp", str(out), None, 1)
    history = json.loads((out / "bssl" / "seed0" / "distill.json").read_text())["history"]
    assert len(part["history"]) == 1 and len(history) == 2 and history[0] == part["history"][0]
    assert r["resumed"] and r["epoch_seconds"] == pytest.approx(sum(h["seconds"] for h in history), abs=0.02)
    assert r["total_seconds"] >= r["epoch_seconds"] > 0


def test_report_from_kept_results_over_two_teachers(ablation, tmp_path):
    keep, doc = tmp_path / "keep", tmp_path / "doc" / "results.md"
    for r in [_result("bssl", 0, 0.36), _result("bssl", 1, 0.34, teacher="bbbbbbbbbbbb", cpu="CPU B"),
              _result("direct-simclr", 0, 0.30), _result("direct-simclr", 1, 0.31),
              {**_result("fp-teacher", "aaaaaaaaaaaa", 0.40), "total_seconds": None}]:
        _keep(keep, r)
    doc.parent.mkdir()
    doc.write_text("old tables\n" + ablation.NOTES_MARKER + "\nhand-written note\n")
    argv = ["--preset", "smoke", "--rows", "bssl", "direct-simclr", "--seeds", "0", "1", "--out", str(tmp_path / "out"),
            "--keep", str(keep), "--doc", str(doc), "--report-only"]
    assert ablation.main(argv) == 0
    page = doc.read_text()
    assert "old tables" not in page and page.endswith(ablation.NOTES_MARKER + "\nhand-written note\n")
    # both teachers are named, the evaluated one with its kNN; runs are counted per teacher
    assert "`aaaaaaaaaaaa` (kNN 40.00, trained on CPU A) 3 runs" in page and "`bbbbbbbbbbbb` 1 runs" in page
    assert "CPU A (3 runs); CPU B (1 runs)" in page
    # BSSL 35.00 ± 1.41 against direct SimCLR 30.50 ± 0.71 on kNN: margin +4.50 over noise 1.58
    assert "| full BSSL beats direct SimCLR on the binary student | knn | +4.50 | 1.58 | 2 | reproduced |" in page
    assert "`direct-mocov2`" in page.split("## Not measured yet")[1]
    data = json.loads((tmp_path / "out" / "ablation.json").read_text())
    # every requested (row, seed) is there, though other rows of the tables are not
    assert data["summary"]["fp-teacher"]["knn"]["n"] == 1 and data["meta"]["complete"]


def test_verdicts_need_two_seeds_on_both_sides(ablation):
    def row(mean, std, n):
        return {"knn": {"mean": mean, "std": std, "n": n}}

    summary = {"a1": row(0.30, 0.0, 1), "b1": row(0.32, 0.0, 1),
               "a3": row(0.36, 0.005, 3), "b3": row(0.34, 0.005, 3), "c3": row(0.355, 0.01, 3)}
    # one seed: no std, so a reversed mean is not yet "NOT reproduced"
    assert ablation._compare(summary, "a1", "b1", "knn")["verdict"] == "other direction, one seed (no std yet)"
    assert ablation._compare(summary, "a1", "a3", "knn")["verdict"] == "other direction, one seed (no std yet)"
    assert ablation._compare(summary, "a3", "b3", "knn")["verdict"] == "reproduced"
    assert ablation._compare(summary, "a3", "c3", "knn")["verdict"] == "same direction, within the seed std"
    assert ablation._compare(summary, "b3", "a3", "knn")["verdict"] == "NOT reproduced (reversed by more than the seed std)"
    assert ablation._compare(summary, "c3", "a3", "knn")["verdict"] == "NOT reproduced"


@pytest.mark.parametrize("script", ["ablation_bssl.py", "bench_teachers.py"])
def test_missing_data_folder_is_one_line_before_any_output(script, tmp_path):
    """The long benchmarks check their data before they create --out: one line, exit code 2, no traceback."""
    import subprocess

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--preset", "cifar10",
                           "--set", f"data.root={tmp_path / 'missing'}", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"{script}: error:" in proc.stderr and "does not exist" in proc.stderr
    assert not out.exists()


def test_teacher_table_from_kept_rows_fills_its_section(tmp_path):
    """bench_teachers --report-only trains nothing: the kept rows go between the markers of an existing page."""
    import subprocess

    keep = tmp_path / "keep"
    keep.mkdir()
    row = {"images_per_s": 100.0, "train_s": 60.0, "cpu": "CPU A"}
    (keep / "random-init.json").write_text(json.dumps({**row, "knn_acc": 0.2, "linear_acc": 0.19, "images_per_s": None}))
    (keep / "byol.json").write_text(json.dumps({**row, "knn_acc": 0.3, "linear_acc": 0.28}))
    page = tmp_path / "results.md"
    page.write_text("# Results\nhand-written\n<!-- bench_teachers:begin -->\nold\n<!-- bench_teachers:end -->\nnotes\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_teachers.py"), "--preset", "smoke",
                           "--methods", "byol,simsiam", "--out", str(tmp_path / "out"), "--keep", str(keep),
                           "--doc", str(page), "--report-only"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert text.startswith("# Results\nhand-written\n<!-- bench_teachers:begin -->\n## Teachers on")
    assert text.endswith("<!-- bench_teachers:end -->\nnotes\n") and "old" not in text
    assert "| byol | 0.3000 | 0.2800 | +0.1000 |" in text and "byol leaves the random-init floor" in text
    assert "Not trained yet: simsiam" in text
    assert not (tmp_path / "out").exists()


def test_teacher_orderings_prefer_an_equal_budget_pair():
    """EnSiam vs SimSiam K-aug is answered by the rows with the same epochs when the table has them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_teachers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from bssl.errors import UserError

    row = lambda knn, epochs: {"knn_acc": knn, "epochs": epochs}  # noqa: E731
    rows = {"random-init": row(0.2, None), "ensiam": row(0.32, 30), "simsiam-kaug": row(0.31, 10)}
    assert any(o.endswith("(after 30 vs 10 epochs: not the same budget)") for o in bench_teachers.orderings(rows))
    rows["simsiam-kaug@30"] = row(0.35, 30)
    said = [o for o in bench_teachers.orderings(rows) if o.startswith("EnSiam")]
    assert said == ["EnSiam NOT above SimSiam with K augmentations: kNN 0.3200 vs 0.3500 (both 30 epochs)"]
    assert bench_teachers.method_budget("simsiam-kaug@30") == ("simsiam-kaug", 30)
    assert bench_teachers.method_budget("ensiam") == ("ensiam", None)
    for bad in ("ensiam@", "ensiam@0", "ensiam@ten", "nosuch@3"):
        with pytest.raises(UserError):
            bench_teachers.method_budget(bad)
