"""`torchrun --nproc_per_node 2 -m bssl distill` on CPU (gloo) trains and writes one set of files."""

import shutil
import subprocess

import pytest

from bssl.utils import load_checkpoint
from test_train_cli import BOUND_S, _args, _env, _free_port


@pytest.mark.slow
def test_torchrun_two_process_distillation(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "d"
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "bssl",
                           "distill", *_args(out, "distill.accumulate=2")], capture_output=True, text=True,
                          env=_env(), timeout=BOUND_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("student: ") == 1  # rank 0 reports
    student = load_checkpoint(out / "student.pt", "student")
    assert [(h["stage"], h["steps"]) for h in student["history"]] == [(1, 2), (2, 2)]
    assert load_checkpoint(out / "stage2.pt")["world_size"] == 2
