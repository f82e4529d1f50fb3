"""LCE export through the larq environment (.larq-venv); skipped with the reason when it is missing."""

from __future__ import annotations

import pytest
import torch

from bssl.errors import UserError
from bssl.export import export_model, fold, larq_env
from bssl.models import build_model

from conftest import ambiguous_sign_inputs, trained_looking
from test_export import N_EQUIV, assert_equivalent

needs_larq = pytest.mark.skipif(
    larq_env.find_larq_python() is None,
    reason=f"no larq environment (.larq-venv); create it with: {larq_env.CREATE_HELP}",
)


@needs_larq
def test_lce_tflite_matches_pytorch_on_256_inputs(tmp_path):
    torch.manual_seed(0)
    student = trained_looking(build_model("reactnet-a", num_classes=10, input_size=32, width=0.125))
    res = export_model(student, "lce", tmp_path, check_samples=N_EQUIV)
    assert res["path"].endswith("model.tflite") and res["bytes"] > 0
    # The binary convs became LCE's own bit-packed ops, not float convs.
    assert res["lce_ops"] == ["LceBconv2d", "LceQuantize"] and res["binary_convs"] == 31
    eq = res["equivalence"]
    assert eq["samples"] == N_EQUIV and eq["runtime"] == "larq-compute-engine"
    ambiguous = ambiguous_sign_inputs(student, fold.check_inputs(N_EQUIV, 32))  # the inputs the export checked
    assert_equivalent(eq, ambiguous)
    assert_equivalent(eq["features"], ambiguous)


def test_missing_larq_env_says_how_to_create_it(tmp_path):
    student = build_model("reactnet-a", num_classes=4, input_size=32, width=0.125)
    with pytest.raises(UserError, match="python -m venv .larq-venv"):
        export_model(student, "lce", tmp_path / "out", larq_python=tmp_path / "nope" / "python")
    assert not (tmp_path / "out").exists()
