"""bssl.bench harness: timing statistics, peak memory in fresh processes, model references, reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bssl.bench import evaluate_targets, markdown_table, parse_model_ref
from bssl.bench.report import load_accuracy, write_reports
from bssl.bench.timing import peak_rss_kb, summarize, time_calls
from bssl.errors import UserError


def test_summarize_percentiles():
    s = summarize([4.0, 1.0, 3.0, 2.0, 100.0])
    assert s["min_ms"] == 1.0 and s["p50_ms"] == 3.0 and s["runs"] == 5
    assert 4.0 < s["p90_ms"] < 100.0


def test_time_calls_counts_warmup_and_budget():
    calls = []
    out = time_calls(lambda x: calls.append(x), 1, warmup=2, runs=5)
    assert len(calls) == 7 and out["runs"] == 5 and len(out["samples_ms"]) == 5
    calls.clear()
    # a zero budget stops after min_runs timed calls
    out = time_calls(lambda x: calls.append(x), 1, warmup=0, runs=50, budget_s=0.0, min_runs=3)
    assert out["runs"] == 3 and len(calls) == 3


def test_peak_rss_of_fresh_process_ignores_parent():
    """A child of a big parent must not inherit the parent's peak (the ru_maxrss pitfall)."""
    big = np.ones(300_000_000 // 8)  # ~300 MB touched in this process
    assert peak_rss_kb() > 250_000
    code = "from bssl.bench.timing import peak_rss_kb; print(peak_rss_kb())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 200_000, child
    del big


def test_parse_model_refs(tmp_path):
    r = parse_model_ref("reactnet-a:width=0.5,stem=small")
    assert r.kind == "registered" and r.options == {"width": 0.5, "stem": "small"}
    assert r.label == "reactnet-a(stem=small,width=0.5)"
    assert parse_model_ref("resnet18").kind == "registered"
    with pytest.raises(UserError, match="neither an existing file"):
        parse_model_ref("no-such-net")
    with pytest.raises(UserError, match="key=value"):
        parse_model_ref("reactnet-a:width")
    with pytest.raises(UserError, match="does not exist"):
        parse_model_ref(str(tmp_path / "missing.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not onnx")
    with pytest.raises(UserError, match="not an ONNX model"):
        parse_model_ref(str(junk))
    so = tmp_path / "lib.so"
    so.write_bytes(b"MZ\x00\x00")
    with pytest.raises(UserError, match="not a shared library"):
        parse_model_ref(str(so))
    pt = tmp_path / "x.pt"
    pt.write_bytes(b"garbage")
    with pytest.raises(UserError):
        parse_model_ref(str(pt))


def test_plain_onnx_is_not_a_bssl_export(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph)
    onnx.save(model, tmp_path / "plain.onnx")
    with pytest.raises(UserError, match="not a bssl export"):
        parse_model_ref(str(tmp_path / "plain.onnx"))
    helper.set_model_props(model, {"bssl_version": "0.1.0"})
    onnx.save(model, tmp_path / "ours.onnx")
    assert parse_model_ref(str(tmp_path / "ours.onnx")).kind == "onnx"


def _row(model, backend, p50, arch=None, **kw):
    return {"model": model, "backend": backend, "status": "ok", "arch": arch or model, "width": 1.0, "p50_ms": p50,
            "p90_ms": p50 * 1.1, "min_ms": p50 * 0.9, **kw}


def test_targets_ratios_and_missing():
    report = {"settings": {"input_size": 224, "threads": 1, "batch_sizes": [1, 8], "runs": 5, "warmup": 1},
              "rows": [_row("resnet18", "onnxruntime", 30.0, peak_mem_mb=80.0),
                       _row("resnet18", "onnxruntime-int8", 6.0),
                       _row("reactnet-a", "kernels", 5.0, bytes=5 * 2**20, peak_mem_mb=20.0),
                       _row("reactnet-a", "torch", 900.0),
                       {"model": "reactnet-a", "backend": "tvm", "status": "unavailable", "reason": "x"}]}
    t = {x["name"]: x for x in evaluate_targets(report)}
    assert t["speed vs onnxruntime FP32 ResNet-18"]["ratio"] == pytest.approx(6.0)
    assert t["speed vs onnxruntime FP32 ResNet-18"]["met"] is True
    assert t["speed vs onnxruntime int8 ResNet-18"]["ratio"] == pytest.approx(1.2)
    assert t["speed vs LCE ReActNet-A"]["met"] is None
    assert t["deployed ReActNet-A size"]["met"] is True
    assert t["peak memory vs FP32 ResNet-18 (onnxruntime)"]["met"] is True
    report["rows"][2]["bytes"] = int(7.9 * 2**20)  # 7.9 MiB = 8.28 MB: not under 8 MB on the strict reading
    assert {x["name"]: x for x in evaluate_targets(report)}["deployed ReActNet-A size"]["met"] is False
    report["rows"][2]["p50_ms"] = 12.0  # slower than int8 -> honestly not met
    t = {x["name"]: x for x in evaluate_targets(report)}
    assert t["speed vs onnxruntime int8 ResNet-18"]["met"] is False
    report["targets"] = evaluate_targets(report)
    md = markdown_table(report)
    assert "| reactnet-a | kernels | 12.0 |" in md and "unavailable [1]" in md and "[1] unavailable: x" in md
    assert "| NO |" in md


def test_write_reports_and_accuracy(tmp_path):
    report = {"settings": {"input_size": 32, "threads": 1, "batch_sizes": [1, 4], "runs": 3, "warmup": 0},
              "machine": {"cpu": "test cpu"}, "rows": [_row("a", "torch", 2.0), _row("b", "torch", 1.0)]}
    acc_file = tmp_path / "acc.json"
    acc_file.write_text(json.dumps({"models": {"a": {"accuracy": 50.0}, "b": {"accuracy": 60.0}}}))
    acc = load_accuracy(acc_file)
    assert acc == {"a": 50.0, "b": 60.0}
    files = write_reports(report, tmp_path, accuracy=acc)
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["model"] == "a"
    assert "test cpu" in (tmp_path / "bench.md").read_text()
    for key in ("latency_plot", "accuracy_plot"):
        assert open(files[key], "rb").read(4) == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="could not be read"):
        load_accuracy(bad)


def test_accuracy_from_a_run_report(tmp_path):
    from bssl.bench.report import plot_latency_vs_accuracy

    run = {"eval": {"student": {"knn": {"metric": "top1", "value": 41.0}, "linear": {"metric": "top1", "value": 45.5}},
                    "teacher": {"svm": {"metric": "mAP", "value": float("nan")}, "knn": {"value": 60.0}}}}
    (tmp_path / "report.json").write_text(json.dumps(run).replace("NaN", "null"))
    acc = load_accuracy(tmp_path / "report.json")
    assert acc == {"student": 45.5, "teacher": 60.0}
    report = {"rows": [dict(_row("model.onnx", "onnxruntime", 3.0), model_kind="onnx"),
                       dict(_row("teacher.pt", "torch", 9.0), model_kind="teacher"),
                       dict(_row("resnet18", "torch", 9.0), model_kind="registered")]}
    path = plot_latency_vs_accuracy(report, acc, tmp_path / "acc.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
