"""`torchrun --nproc_per_node 2 -m bssl distill|run` on CPU (gloo) trains and writes one set of files."""

import shutil
import subprocess

import pytest

from bssl.utils import load_checkpoint
from bssl.train.distributed import free_port
from test_train_cli import BOUND_S, _args, _env


@pytest.mark.slow
def test_torchrun_two_process_distillation(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "d"
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "bssl",
                           "distill", *_args(out, "distill.accumulate=2")], capture_output=True, text=True,
                          env=_env(), timeout=BOUND_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("student: ") == 1  # rank 0 reports
    student = load_checkpoint(out / "student.pt", "student")
    assert [(h["stage"], h["steps"]) for h in student["history"]] == [(1, 2), (2, 2)]
    assert load_checkpoint(out / "stage2.pt")["world_size"] == 2


@pytest.mark.slow
def test_torchrun_two_process_run_trains_on_both_and_reports_once(tmp_path):
    """`torchrun -m bssl run`: teacher and distillation data-parallel, the other steps on rank 0, one report."""
    import json

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "run"
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "bssl",
                           "run", "--preset", "smoke", "--out", str(out), "--set", "bench.backends=[\"runtime\"]",
                           "--set", "export.formats=[\"bssl\"]", "--set", "eval.protocols=[\"knn\", \"linear\"]"],
                          capture_output=True, text=True, env=_env(), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("# bssl run report") == 1 and proc.stdout.count("[bssl run] distill: done") == 1
    assert load_checkpoint(out / "distill" / "stage2.pt")["world_size"] == 2
    report = json.loads((out / "report.json").read_text())
    assert report["classifier"]["rows"] and report["eval"]["student"]
