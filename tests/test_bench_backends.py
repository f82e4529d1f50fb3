"""Backends beyond torch/onnxruntime: kernels (packed artifact), tvm, lce, tvm-rpc, packed ONNX files."""

from __future__ import annotations

import socket
import subprocess

import pytest
import torch

from bssl.bench import get_backend, parse_model_ref, run_benchmarks
from bssl.bench.backends.lce import venv_python
from bssl.errors import UserError
from conftest import needs_kernels


@needs_kernels
def test_packed_artifact_matches_deploy_pack(tmp_path):
    from bssl.bench.packed_artifact import load_packed, save_packed
    from bssl.deploy import pack
    from bssl.models import build_model

    torch.manual_seed(0)
    model = build_model("reactnet-a", input_size=32, width=0.25).eval()
    for m in model.modules():  # non-trivial statistics so that folding errors would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    n = save_packed(model, tmp_path / "m.packed.pt")
    full = sum(p.numel() for p in model.parameters()) * 4
    assert n < full / 3  # 1-bit weights on disk
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        want, ref, got = model(x), pack(model)(x), load_packed(tmp_path / "m.packed.pt")(x)
    assert torch.allclose(got, ref, atol=1e-4) and torch.allclose(got, want, atol=1e-3)


@needs_kernels
def test_kernels_and_tvm_rows(tmp_path):
    rep = run_benchmarks(["reactnet-a:width=0.25", "resnet18"], ["kernels", "tvm"], input_size=32, runs=3,
                         warmup=1, out_dir=tmp_path, batch_sizes=(1,), progress=False)
    rows = {(r["arch"], r["backend"]): r for r in rep["rows"]}
    for b in ("kernels", "tvm"):
        assert rows[("reactnet-a", b)]["status"] == "ok", rows[("reactnet-a", b)].get("reason")
        assert rows[("reactnet-a", b)]["p50_ms"] > 0 and rows[("reactnet-a", b)]["peak_mem_mb"] >= 0
    # 1-bit weights: far below the FP32 size of the same parameters
    assert rows[("reactnet-a", "kernels")]["bytes"] < 4 * rows[("reactnet-a", "kernels")]["params"] / 3
    assert rows[("resnet18", "kernels")]["status"] == "skipped" and "binary students" in rows[("resnet18", "kernels")]["reason"]
    assert rows[("resnet18", "tvm")]["status"] == "skipped"


@pytest.mark.skipif(venv_python() is None, reason="no .larq-venv with larq-compute-engine")
def test_lce_runs_a_tflite_in_its_venv(tmp_path):
    script = tmp_path / "mk.py"
    script.write_text(
        "import os, sys\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
        "import larq as lq, larq_compute_engine as lce, tf_keras as keras\n"
        "x = inp = keras.Input((16, 16, 3))\n"
        "x = lq.layers.QuantConv2D(32, 3, padding='same', input_quantizer='ste_sign', kernel_quantizer='ste_sign',"
        " kernel_constraint='weight_clip', use_bias=False, pad_values=1.0)(x)\n"
        "x = keras.layers.GlobalAveragePooling2D()(x)\n"
        "open(sys.argv[1], 'wb').write(lce.convert_keras_model(keras.Model(inp, keras.layers.Dense(4)(x))))\n")
    flat = tmp_path / "tiny.tflite"
    subprocess.run([str(venv_python()), str(script), str(flat)], check=True, capture_output=True, timeout=300)
    rep = run_benchmarks([str(flat)], ["lce", "onnxruntime"], input_size=16, runs=3, warmup=1, out_dir=tmp_path,
                         batch_sizes=(1, 2), progress=False)
    lce_row, ort_row = rep["rows"]
    assert lce_row["status"] == "ok", lce_row.get("reason")
    assert lce_row["bytes"] == flat.stat().st_size and lce_row["latency"]["2"]["runs"] == 3
    assert lce_row["peak_mem_mb"] >= 0
    assert ort_row["status"] == "skipped"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_rpc_unreachable_and_missing_address(tmp_path):
    b = get_backend("tvm-rpc")
    saved = dict(b.options)
    try:
        b.options.clear()
        rep = run_benchmarks(["reactnet-a:width=0.25"], ["tvm-rpc"], input_size=32, runs=1, warmup=0,
                             out_dir=tmp_path, progress=False)
        assert rep["rows"][0]["status"] == "unavailable" and "--rpc HOST:PORT" in rep["rows"][0]["reason"]
        with pytest.raises(UserError, match="unreachable"):
            run_benchmarks(["reactnet-a:width=0.25"], ["tvm-rpc"], input_size=32, runs=1, warmup=0, out_dir=tmp_path,
                           backend_options={"tvm-rpc": {"rpc": f"127.0.0.1:{_closed_port()}", "timeout_s": 2}},
                           progress=False)
        with pytest.raises(UserError, match="HOST:PORT"):
            run_benchmarks(["reactnet-a:width=0.25"], ["tvm-rpc"], input_size=32, runs=1, warmup=0, out_dir=tmp_path,
                           backend_options={"tvm-rpc": {"rpc": "no-port-here"}}, progress=False)
    finally:
        b.options.clear()
        b.options.update(saved)


def test_packed_onnx_is_recognised_and_routed(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("BinaryConv2d", ["input"], ["output"], domain="ai.bssl")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, producer_name="bssl",
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.bssl", 1)])
    path = tmp_path / "student-packed.onnx"
    onnx.save(model, path)
    ref = parse_model_ref(str(path))
    assert ref.kind == "onnx-packed"
    assert "TVM" in get_backend("onnxruntime").accepts(ref)


@needs_kernels
def test_layers_wrapper(tmp_path):
    from bssl.bench.layers import layer_report

    rep = layer_report(threads=1, runs=1, out_dir=tmp_path, backends=["kernels"], input_size=32, width=0.25)
    rows = rep["runs"]["1"]["layers"]
    assert rows and all(r["macs"] > 0 and r["kernels_s"] > 0 for r in rows)
    assert "| layer (k s cin->cout @hxw) |" in rep["markdown"]
    assert (tmp_path / "layers.json").is_file() and (tmp_path / "layers.md").is_file()
