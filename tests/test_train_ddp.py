"""Distillation under DDP on CPU: 2 gloo processes equal one process on the same global batch (with and
without gradient accumulation, BSSL and the gathering direct baselines), and an interrupted 2-process
run resumes to the uninterrupted weights."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bssl.config import apply_overrides, load_preset
from bssl.distill import METHODS
from bssl.distill.trainer import distill_forward, stage_modules, stage_stepper
from bssl.utils import load_checkpoint
from bssl.train.distributed import free_port
from conftest import write_teacher

GLOBAL_BATCH = 8
# BSSL with and without accumulation; the direct baselines that need the global batch (SimCLR's
# negatives, MoCo v2's queue) gather it, micro-step by micro-step
RUNS = (("bssl", 1), ("bssl", 2), ("direct-simclr", 2), ("direct-mocov2", 2))
STEPS = 3
FEAT = 24
CPU = torch.device("cpu")
TINY = ["data.num_train=16", "data.num_test=16", "distill.batch_size=8", "distill.num_pseudo_classes=16",
        "distill.classifier_hidden=32", "distill.epochs_stage1=2", "distill.epochs_stage2=1", "run.device=\"cpu\"",
        "teacher.proj_hidden=32", "teacher.proj_dim=16"]
# BSSL's defaults keep their batch statistics (the centring mean of h, the infomax marginal of g): both are
# taken over the global batch across processes, so a shard's gradient averaged over ranks is the global one
# sync_bn = true: the student's BN over the global batch too, so 2 processes are 1 (auto keeps its statistics
# per process, as BURN does, which the test of auto below checks)
PER_SAMPLE = ["distill.optimizer=\"sgd\"", "distill.lr=0.05", "distill.grad_clip=1.0", "distill.sync_bn=true"]


def _cfg(*extra):
    return apply_overrides(load_preset("smoke"), TINY + list(extra))


def _tiny_teacher():
    torch.manual_seed(1)
    t = nn.Sequential(nn.Conv2d(3, FEAT, 3, 2, 1), nn.BatchNorm2d(FEAT), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return t.requires_grad_(False).eval()


def _steps(views, accumulate, rank=0, world=1, method="bssl"):
    """STEPS distillation steps of the trainer's own modules, stepper and forward on this rank's share.

    Micro-step j of every rank covers rows j*G/a .. (j+1)*G/a of the global batch, each rank its slice,
    so a micro-step's synchronised BN sees the same rows as one process's. In float64, so that the
    comparison tests the algorithm rather than float32 summation order."""
    cfg = _cfg(*PER_SAMPLE, f"distill.accumulate={accumulate}")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        direct = method.startswith("direct-")
        teacher = None if direct else _tiny_teacher()
        tinfo = {"ssl_config": dict(cfg["teacher"])} if direct else {"feature_dim": FEAT}
        torch.manual_seed(0)
        student, method, model = stage_modules(cfg, cfg["distill"], 1, METHODS.get(method), tinfo, 0, CPU)
        stepper = stage_stepper(student, method, cfg["distill"], CPU, STEPS, 0)
        model.train()
        micro = GLOBAL_BATCH // accumulate
        per = micro // world
        for step in range(STEPS):
            batches = []
            for j in range(accumulate):
                rows = slice(j * micro + rank * per, j * micro + (rank + 1) * per)
                batches.append(([v[step, rows] for v in views], None))
            stepper.step(model, step, batches, distill_forward(teacher, CPU, step, STEPS))
            method.after_step(student, step, STEPS)
    finally:
        torch.set_default_dtype(default)
    return {**{f"student.{k}": v.detach().clone() for k, v in student.state_dict().items()},
            **{f"method.{k}": v.detach().clone() for k, v in method.state_dict().items()}}


def _worker(rank, world, port, views, teacher_path, out_dir, bn_input):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from bssl.distill import run_distill

        for method, acc in RUNS:
            state = _steps(views, acc, rank, world, method)
            if rank == 0:
                torch.save(state, os.path.join(out_dir, f"steps_{method}_acc{acc}.pt"))
        # distill.sync_bn = auto: BSSL synchronises its heads only, a direct baseline its student too
        kinds = {}
        for name in ("bssl", "direct-simclr"):
            cfg = _cfg()
            tinfo = {"ssl_config": dict(cfg["teacher"])} if name.startswith("direct-") else {"feature_dim": FEAT}
            student, method, _ = stage_modules(cfg, cfg["distill"], 1, METHODS.get(name), tinfo, 0, CPU)
            kinds[name] = {part: sorted({type(m).__name__ for m in mod.modules()
                                         if isinstance(m, nn.modules.batchnorm._BatchNorm)})
                           for part, mod in (("student", student), ("method", method))}
        if rank == 0:
            torch.save(kinds, os.path.join(out_dir, "bn_kinds.pt"))
        # synchronised BN under bf16 autocast takes its statistics in fp32 (in bf16 E[x^2] - E[x]^2 of
        # activations far from 0 is noise, and negative)
        from bssl.train.distributed import SyncBatchNorm

        bn = SyncBatchNorm(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = bn(bn_input.chunk(world)[rank].bfloat16())
        torch.save(y.detach().float(), os.path.join(out_dir, f"bn{rank}.pt"))
        cfg = _cfg("distill.accumulate=2")
        run_distill(cfg, teacher_path, os.path.join(out_dir, "full"), progress=False)
        part = run_distill(cfg, teacher_path, os.path.join(out_dir, "part"), progress=False, stop_after=1)
        assert part["checkpoint"] is None and len(part["history"]) == 1
        run_distill(cfg, teacher_path, os.path.join(out_dir, "part"), resume=True, progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_distillation_equals_one_process_and_resumes(tmp_path):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    views = [torch.randn(STEPS, GLOBAL_BATCH, 3, 32, 32, generator=gen, dtype=torch.float64) for _ in range(2)]
    teacher = write_teacher(tmp_path / "teacher.pt", _cfg())
    bn_input = 50 + torch.randn(8, 3, 4, 4, generator=gen)
    mp.spawn(_worker, args=(2, free_port(), views, str(teacher), str(tmp_path), bn_input), nprocs=2, join=True)

    want = nn.BatchNorm2d(3)(bn_input.bfloat16().float())
    got = torch.cat([torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in (0, 1)])
    assert torch.allclose(got, want, atol=2e-2), (got - want).abs().max()

    kinds = torch.load(tmp_path / "bn_kinds.pt")
    assert kinds["bssl"] == {"student": ["BatchNorm2d"], "method": ["SyncBatchNorm"]}, kinds
    assert kinds["direct-simclr"]["student"] == ["SyncBatchNorm"], kinds

    singles = {}
    for method, acc in RUNS:
        single = singles[method, acc] = _steps(views, acc, method=method)
        ddp = torch.load(tmp_path / f"steps_{method}_acc{acc}.pt", weights_only=True)
        assert set(single) == set(ddp)
        for k in single:
            if k.endswith("num_batches_tracked"):
                continue
            assert torch.allclose(single[k], ddp[k], atol=1e-10, rtol=1e-9), (method, acc, k)
        if method == "direct-mocov2":  # the queue holds every rank's keys, in the single process's order
            assert int(ddp["method.ssl.queue_ptr"]) == int(single["method.ssl.queue_ptr"]) == STEPS * GLOBAL_BATCH
    single = singles["bssl", 2]
    # the comparison is between trained weights: the student, g and the projector all moved
    cfg = _cfg(*PER_SAMPLE)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        student, method, _ = stage_modules(cfg, cfg["distill"], 1, METHODS.get("bssl"), {"feature_dim": FEAT}, 0, CPU)
    finally:
        torch.set_default_dtype(default)
    start = {**{f"student.{k}": v for k, v in student.state_dict().items()},
             **{f"method.{k}": v for k, v in method.state_dict().items()}}
    moved = {".".join(k.split(".")[:2]) for k, v in start.items()
             if v.is_floating_point() and not torch.allclose(v, single[k])}
    assert {"student.blocks", "student.classifier", "method.classifier", "method.projector"} <= moved, moved

    # an interrupted 2-process run resumes (every rank's RNG streams restored) to the uninterrupted weights
    full = load_checkpoint(tmp_path / "full" / "stage2.pt")
    resumed = load_checkpoint(tmp_path / "part" / "stage2.pt")
    assert full["world_size"] == 2 and [h["epoch"] for h in resumed["history"]] == [1]
    for part in ("student_state", "method_state"):
        for k, v in full[part].items():
            assert torch.equal(v, resumed[part][k]), (part, k)
    s1_full = load_checkpoint(tmp_path / "full" / "stage1.pt")["history"]
    s1_part = load_checkpoint(tmp_path / "part" / "stage1.pt")["history"]
    assert [h["loss"] for h in s1_full] == [h["loss"] for h in s1_part] and len(s1_full) == 2
