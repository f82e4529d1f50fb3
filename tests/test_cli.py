"""The CLI: --help everywhere, one-line errors with exit code 2, nothing half-written."""

import subprocess
import sys

import pytest

from bssl.cli import SUBCOMMANDS, main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bssl", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_top_level_help_lists_every_subcommand():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in SUBCOMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: bssl " + name in capsys.readouterr().out


def _one_line_error(r):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_unknown_preset_is_one_line(tmp_path):
    line = _one_line_error(run_cli("run", "--preset", "nope", "--out", str(tmp_path / "r")))
    assert "unknown preset 'nope'" in line
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_needs_resume_or_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text("{}")
    line = _one_line_error(run_cli("run", "--preset", "smoke", "--out", str(out)))
    assert str(out) in line and "--resume" in line and "--force" in line


def test_resume_without_a_run_is_refused(tmp_path):
    line = _one_line_error(run_cli("run", "--preset", "smoke", "--out", str(tmp_path / "empty"), "--resume"))
    assert "no bssl run" in line


def test_missing_teacher_checkpoint(tmp_path):
    line = _one_line_error(run_cli("run", "--preset", "smoke", "--out", str(tmp_path / "r"),
                                   "--teacher", str(tmp_path / "missing.pt")))
    assert "missing.pt" in line
    assert not (tmp_path / "r").exists()


def test_bad_data_root_is_one_line(tmp_path):
    line = _one_line_error(run_cli("run", "--preset", "smoke", "--out", str(tmp_path / "r"),
                                   "--dataset", "imagefolder", "--data-root", str(tmp_path / "nowhere")))
    assert "nowhere" in line
    assert not (tmp_path / "r").exists()
