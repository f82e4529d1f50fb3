"""`bssl distill` as 2 processes on CPU: bad input ends every rank with exit code 2 and one line from
rank 0, within a time bound instead of a hang (a 2-process run: tests/test_train_torchrun.py)."""

import os
import subprocess
import sys
import time

import pytest
import torch

from bssl.config import apply_overrides, load_preset
from bssl.errors import UserError
from bssl.utils import load_checkpoint
from bssl.train.distributed import free_port

TINY = ["data.num_train=16", "data.num_test=16", "distill.batch_size=8", "distill.num_pseudo_classes=16",
        "distill.classifier_hidden=32", "distill.epochs_stage1=1", "distill.epochs_stage2=1",
        "teacher.proj_hidden=32", "teacher.proj_dim=16"]
BOUND_S = 90  # a hang would sit in a collective for gloo's 30-minute timeout


def _args(out, *extra, method="direct-simclr"):
    sets = [a for kv in TINY + list(extra) for a in ("--set", kv)]
    return ["--preset", "smoke", "--device", "cpu", "--method", method, "--out", str(out), *sets]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def _two_ranks(args):
    """`python -m bssl distill ARGS` as ranks 0 and 1 of one job (what torchrun sets up), with a time bound."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "bssl", "distill", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r),
                                       WORLD_SIZE="2", LOCAL_WORLD_SIZE="2"))
             for r in (0, 1)]
    t0 = time.time()
    try:
        outs = [p.communicate(timeout=BOUND_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, err) for p, (_, err) in zip(procs, outs)], time.time() - t0


def _errors(stderr):
    return [line for line in stderr.splitlines() if "error" in line.lower()]


@pytest.mark.slow
def test_bad_input_exits_2_on_every_rank_with_one_line(tmp_path):
    from bssl.distill import run_distill

    cases = [
        (_args(tmp_path / "a", "distill.batch_size=9"), "distill.batch_size = 9 does not split over 2 processes"),
        (_args(tmp_path / "b", "distill.precision=\"fp16\""), "fp16' needs a CUDA device"),
    ]
    # a resume folder written by one process (stopped after epoch 1 of 2 of stage 1)
    one = tmp_path / "one"
    cfg = apply_overrides(load_preset("smoke"), TINY + ["distill.epochs_stage1=2", "run.device=\"cpu\"",
                                                        "distill.method=\"direct-simclr\""])
    torch.set_num_threads(1)
    run_distill(cfg, None, one, method="direct-simclr", progress=False, stop_after=1)
    assert load_checkpoint(one / "stage1" / "last.pt")["world_size"] == 1
    cases.append((_args(one, "distill.epochs_stage1=2") + ["--resume"], "was written by 1 process but this run has 2"))
    # a different config is refused the same way (checked in one process: the launch costs ~10 s here)
    with pytest.raises(UserError, match=r"last.pt was written with a different \[distill\] config \(lr: "):
        run_distill(apply_overrides(cfg, ["distill.lr=0.5"]), None, one, method="direct-simclr", resume=True)
    for args, message in cases:
        (r0, r1), seconds = _two_ranks(args)
        assert r0[0] == 2 and r1[0] == 2, (message, r0, r1)
        lines = _errors(r0[1])
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("bssl distill: error:"), (message, r0[1])
        assert _errors(r1[1]) == [], r1[1]
        assert seconds < BOUND_S
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written
