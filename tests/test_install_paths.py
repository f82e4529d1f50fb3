"""Lookups that must work both from a source checkout and from an installed wheel.

The full check (a non-editable install into a fresh venv running `bssl run --preset smoke` and
`bssl bench layers` from another folder) is a step of .ci/run: it takes minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bssl.errors import UserError
from bssl.export import larq_env

ROOT = Path(__file__).resolve().parents[1]


def _fake_venv(folder: Path) -> Path:
    py = larq_env.venv_python(folder)
    py.parent.mkdir(parents=True)
    py.write_text("")
    return py


@pytest.fixture
def no_larq_vars(monkeypatch):
    monkeypatch.delenv(larq_env.PYTHON_VAR, raising=False)
    monkeypatch.delenv(larq_env.VENV_VAR, raising=False)


def test_checkout_is_detected_and_an_installed_copy_is_not(monkeypatch, tmp_path):
    in_checkout = ROOT in Path(larq_env.__file__).resolve().parents
    assert larq_env.source_checkout() == (ROOT if in_checkout else None)
    installed = tmp_path / "lib" / "python3" / "site-packages" / "bssl" / "export" / "larq_env.py"
    installed.parent.mkdir(parents=True)
    (installed.parents[1] / "__init__.py").write_text("")
    monkeypatch.setattr(larq_env, "__file__", str(installed))
    assert larq_env.source_checkout() is None


def test_lookup_order(monkeypatch, tmp_path, no_larq_vars):
    monkeypatch.chdir(tmp_path)
    here = _fake_venv(tmp_path / ".larq-venv")
    assert larq_env.find_larq_python() == here
    elsewhere = _fake_venv(tmp_path / "envs" / "larq")
    monkeypatch.setenv(larq_env.VENV_VAR, str(elsewhere.parents[1]))
    assert larq_env.find_larq_python() == elsewhere
    assert larq_env.default_venv() == elsewhere.parents[1]
    monkeypatch.setenv(larq_env.PYTHON_VAR, str(here))
    assert larq_env.find_larq_python() == here


def test_an_explicit_variable_that_points_nowhere_is_not_overridden(monkeypatch, tmp_path, no_larq_vars):
    monkeypatch.chdir(tmp_path)
    _fake_venv(tmp_path / ".larq-venv")
    monkeypatch.setenv(larq_env.VENV_VAR, str(tmp_path / "missing"))
    assert larq_env.find_larq_python() is None
    with pytest.raises(UserError) as e:
        larq_env.larq_python()
    msg = str(e.value)
    assert str(tmp_path / "missing") in msg and "python -m venv .larq-venv" in msg
    assert larq_env.VENV_VAR in msg and larq_env.PYTHON_VAR in msg


def test_installed_copy_looks_in_the_working_directory_only(monkeypatch, tmp_path, no_larq_vars):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(larq_env, "source_checkout", lambda: None)
    assert [py for _, py in larq_env.candidates()] == [larq_env.venv_python(tmp_path / ".larq-venv")]
    assert larq_env.default_venv() == tmp_path / ".larq-venv"


def test_layers_module_loads_without_torch_or_bssl():
    # the larq environment starts bssl/bench/layers.py by path, and has neither torch nor bssl
    code = ("import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('layers', {str(ROOT / 'bssl' / 'bench' / 'layers.py')!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "bad = [n for n in ('torch', 'bssl') if n in sys.modules]; "
            "assert not bad and callable(m.lce_worker_main), bad")
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT.parent, env={"PYTHONPATH": str(Path(np.__file__).parents[1])})
    assert res.returncode == 0, res.stderr

