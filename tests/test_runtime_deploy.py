"""Deploying model.bssl: the float16 export flag, evaluating and benchmarking the file itself,
target folders with a static bssl-infer, and importing bssl-infer --json results from a board."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bssl.runtime as rt
from bssl.cli import main
from bssl.deploy.model_file import DTYPES, read_header
from bssl.models import build_model, save_student

if not rt.available():
    pytest.skip("native runtime library not built (pip install -e .)", allow_module_level=True)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def student(name="reactnet-a", size=32, width=0.25, classes=10, seed=0):
    torch.manual_seed(seed)
    m = build_model(name, num_classes=classes, input_size=size, width=width, pad_value=1.0)
    for mod in m.modules():  # trained-looking BN statistics, so the folded parts are not identities
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


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
    assert DTYPES["f16"] not in d32 and DTYPES["f16"] in d16 and DTYPES["f32"] not in d16
    assert d32.count(DTYPES["bits"]) == d16.count(DTYPES["bits"]) > 0
    assert f16.stat().st_size < f32.stat().st_size
    report = json.loads((tmp_path / "f16" / "export.json").read_text())
    assert report["exports"][0]["float16"] is True and report["exports"][0]["equivalence"]["top1_agreement"] >= 0.875
