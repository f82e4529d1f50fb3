"""run_benchmarks end to end on tiny models (32 px): every row measured in fresh worker processes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bssl.bench import get_backend, markdown_table, run_benchmarks, write_reports
from bssl.commands import bench as bench_cmd
from bssl.errors import UserError


def _cli(argv):
    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    return bench_cmd.run(p.parse_args(argv))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rep = run_benchmarks(["reactnet-a:width=0.125", "resnet18"], ["torch", "onnxruntime", "onnxruntime-int8"],
                         threads=1, input_size=32, runs=3, warmup=1, out_dir=out, batch_sizes=(1, 2),
                         progress=False)
    return rep, out


def test_rows_measured(report):
    rep, out = report
    rows = {(r["model"], r["backend"]): r for r in rep["rows"]}
    assert len(rows) == 6
    for key, r in rows.items():
        assert r["status"] == "ok", (key, r.get("reason"))
        assert r["p50_ms"] > 0 and r["min_ms"] <= r["p50_ms"] <= r["p90_ms"]
        assert r["latency"]["1"]["runs"] == 3 and r["latency"]["2"]["runs"] == 3
        assert r["throughput_ips"] > 0 and r["bytes"] > 0 and r["peak_mem_mb"] >= 0
    # the FP32 weights of resnet18 (11.7M params) dominate its files; int8 is about 4x smaller
    r18 = rows[("resnet18", "onnxruntime")]
    assert 40e6 < r18["bytes"] < 50e6
    assert rows[("resnet18", "onnxruntime-int8")]["bytes"] < r18["bytes"] / 3
    # loading 45 MB of weights shows up in the memory measurement
    assert rows[("resnet18", "torch")]["peak_mem_mb"] > 30
    student = rows[("reactnet-a(width=0.125)", "torch")]
    assert student["arch"] == "reactnet-a" and student["width"] == 0.125
    assert student["bops"] > 0 and student["params"] > 0
    assert rep["machine"]["logical_cpus"] >= 1 and rep["settings"]["input_size"] == 32


def test_report_files(report, tmp_path):
    rep, _ = report
    files = write_reports(rep, tmp_path, json_path=tmp_path / "r.json")
    assert {"json", "markdown"} <= set(files) and all(Path(f).is_file() for f in files.values())
    assert json.loads((tmp_path / "r.json").read_text())["kind"] == "bench"
    md = markdown_table(rep)
    assert md.count("\n| resnet18 |") == 3


def test_unavailable_backend_row_or_error(tmp_path, monkeypatch):
    b = get_backend("onnxruntime")
    monkeypatch.setattr(type(b), "availability", lambda self: "onnxruntime not installed; pip install onnxruntime")
    rep = run_benchmarks(["resnet18"], ["onnxruntime"], input_size=32, runs=1, warmup=0, out_dir=tmp_path,
                         progress=False)
    assert rep["rows"][0]["status"] == "unavailable" and "pip install" in rep["rows"][0]["reason"]
    with pytest.raises(UserError, match="pip install onnxruntime"):
        run_benchmarks(["resnet18"], ["onnxruntime"], input_size=32, runs=1, warmup=0, out_dir=tmp_path,
                       strict=True, progress=False)


def test_cli_errors(tmp_path):
    with pytest.raises(UserError, match="unknown bench backend"):
        _cli(["resnet18", "--backend", "nope", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="neither an existing file"):
        _cli(["not-a-model", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="bad bench settings"):
        _cli(["resnet18", "--threads", "0", "--out", str(tmp_path)])


def test_cli_list_backends(capsys):
    assert _cli(["--list-backends", "x"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime-int8" in out and "torch" in out


def test_checkpoints_as_the_pipeline_passes_them(tmp_path):
    """`bssl run` hands over a student checkpoint and a teacher file (here a torchvision state dict)."""
    import torch
    import torchvision

    from bssl.models import build_model, save_student

    student = build_model("reactnet-a", input_size=32, width=0.25)
    save_student(tmp_path / "student.pt", student, {"test": True})
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "teacher.pth")
    rep = run_benchmarks([str(tmp_path / "student.pt"), str(tmp_path / "teacher.pth")], ["torch"], threads=1,
                         input_size=32, runs=2, warmup=0, out_dir=tmp_path / "bench", batch_sizes=(1,), progress=False)
    s, t = rep["rows"]
    assert s["status"] == "ok" and t["status"] == "ok", (s.get("reason"), t.get("reason"))
    assert s["model_kind"] == "student" and s["arch"] == "reactnet-a" and s["width"] == 0.25
    assert t["model_kind"] == "teacher" and t["bytes"] > 40e6
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    with pytest.raises(UserError):
        run_benchmarks([str(bogus)], ["torch"], input_size=32, runs=1, warmup=0, out_dir=tmp_path, progress=False)


def test_bssl_cli_exit_codes(tmp_path, capsys):
    from bssl.cli import main

    assert main(["bench", "no-such-model", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bssl bench: error:" in err and "no-such-model" in err and "Traceback" not in err
    assert main(["bench", "resnet18", "--backend", "tvm-rpc", "--rpc", "bad-address", "--out", str(tmp_path)]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
