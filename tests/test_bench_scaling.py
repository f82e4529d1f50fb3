"""Cost-growth sweeps: slope fitting, one stem per sweep, report and plot."""

from __future__ import annotations


import pytest

from bssl.bench.scaling import _with_option, fit_slope, run_scaling, scaling_markdown
from bssl.errors import UserError


def test_fit_slope_recovers_power_laws():
    xs = [32, 64, 128, 224]
    assert fit_slope(xs, [3.0 * x ** 2 for x in xs]) == pytest.approx(2.0)
    assert fit_slope(xs, [5.0 * x ** 0.5 for x in xs]) == pytest.approx(0.5)
    assert fit_slope([1.0], [2.0]) is None and fit_slope([1, 2], [0.0, 1.0]) is None


def test_with_option_keeps_user_options():
    assert _with_option("reactnet-a", width=0.5) == "reactnet-a:width=0.5"
    assert _with_option("reactnet-a:stem=small,width=2", width=0.5) == "reactnet-a:stem=small,width=0.5"


def test_run_scaling_small(tmp_path):
    rep = run_scaling("reactnet-a", ["torch"], sizes=[32, 64], widths=[0.25], threads=1, runs=1, warmup=0,
                      out_dir=tmp_path, width_sweep_size=32, progress=False)
    assert rep["size_sweep_stem"] == "small" and rep["width_sweep_stem"] == "small"
    pts = [p for p in rep["points"] if p["axis"] == "input_size"]
    assert [p["value"] for p in pts] == [32, 64] and all(p["status"] == "ok" for p in pts)
    # same architecture along the sweep: OPs grow with the pixel count (slope 2)
    assert rep["slopes"]["input_size"]["torch"]["ops"] == pytest.approx(2.0, abs=0.15)
    assert rep["slopes"]["width"]["torch"]["latency"] is None  # one width point: no slope
    assert (tmp_path / "scaling.json").is_file() and (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert "| input_size | 64 | torch |" in scaling_markdown(rep)
    with pytest.raises(UserError):  # a file, not a name that can be rebuilt at every size
        run_scaling(str(tmp_path / "scaling.json"), ["torch"], out_dir=tmp_path)
    with pytest.raises(UserError, match="sizes must be"):
        run_scaling("reactnet-a", ["torch"], sizes=[8], out_dir=tmp_path)
