"""Data parallel on CPU: 2 gloo processes on loopback must equal one process on the same global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bssl.config import load_preset
from bssl.teachers import build_method
from bssl.train import distributed as D
from bssl.teachers.train import make_optimizer, teacher_settings, train_teacher
from bssl.utils import load_checkpoint
from bssl.train.distributed import free_port

METHODS = ("mocov2", "simsiam", "simclr")
STEPS = 3
GLOBAL_BATCH = 8


def _cfg(method):
    cfg = load_preset("smoke")
    cfg["run"]["device"] = "cpu"
    cfg["data"].update(num_train=32, num_test=16, image_size=16)
    cfg["teacher"].update(method=method, epochs=2, batch_size=16, proj_hidden=16, proj_dim=8, queue_size=12,
                          small_stem=False, lr=0.05, knn_every=2, fussl_m=2, fussl_phase2_epochs=1,
                          optimizer="sgd", weight_decay=5e-4)  # SGD: Adam's 1/sqrt(v) amplifies float64 round-off
    return cfg


def _steps(method, views, rank=0, world=1, distributed=False):
    """A few SGD steps of `method` on this rank's slice of the global batch of `views`.

    In float64, so that the comparison tests the algorithm (global BN statistics, queue order,
    gradient averaging) rather than float32 summation order."""
    torch.manual_seed(0)
    m, _ = build_method(_cfg(method))
    m = m.double()
    if distributed:
        m = D.convert_sync_batchnorm(m, torch.device("cpu"))
    opt = make_optimizer(m, teacher_settings(_cfg(method)))
    model = torch.nn.parallel.DistributedDataParallel(m) if distributed else m
    m.train()
    per = GLOBAL_BATCH // world
    sl = slice(rank * per, (rank + 1) * per)
    for step in range(STEPS):
        local = [v[step, sl] for v in views]
        loss, _ = model(local, torch.arange(per))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        m.after_step(step + 1, STEPS)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _worker(rank, world, port, views, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for method in METHODS:
            state = _steps(method, views[method], rank, world, distributed=True)
            if rank == 0:
                torch.save(state, os.path.join(out_dir, f"{method}.pt"))
        # gradient-preserving gather: every rank's loss reaches every rank's rows
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        weights = torch.arange(2 * world * 3, dtype=torch.float32).view(2 * world, 3)
        (D.gather(x) * weights).sum().backward()
        torch.save({"gathered": D.gather(x.detach()), "grad": x.grad}, os.path.join(out_dir, f"gather{rank}.pt"))
        # the whole trainer under a process group (FUSSL labels through the gather)
        train_teacher(_cfg("fussl"), os.path.join(out_dir, "fussl"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    views = {m: [torch.randn(STEPS, GLOBAL_BATCH, 3, 16, 16, generator=gen, dtype=torch.float64) for _ in range(2)]
             for m in METHODS}
    mp.spawn(_worker, args=(2, free_port(), views, str(tmp_path)), nprocs=2, join=True)

    for method in METHODS:
        single = _steps(method, views[method])
        ddp = torch.load(tmp_path / f"{method}.pt", weights_only=True)
        assert set(single) == set(ddp)
        for k in single:
            if k.endswith("num_batches_tracked"):
                continue
            assert torch.allclose(single[k], ddp[k], atol=1e-10, rtol=1e-9), (method, k)
        init, _ = build_method(_cfg(method))
        moved = [k for k, v in init.state_dict().items() if v.is_floating_point() and not torch.allclose(v.double(), single[k])]
        assert any("backbone.layer1" in k for k in moved)  # the comparison is not between untouched weights
        if method == "mocov2":
            assert int(ddp["queue_ptr"]) == int(single["queue_ptr"]) == (STEPS * GLOBAL_BATCH) % 12

    g0 = torch.load(tmp_path / "gather0.pt", weights_only=True)
    g1 = torch.load(tmp_path / "gather1.pt", weights_only=True)
    assert torch.equal(g0["gathered"], torch.cat([torch.ones(2, 3), torch.full((2, 3), 2.0)]))
    weights = torch.arange(12, dtype=torch.float32).view(4, 3)
    assert torch.equal(g0["grad"], 2 * weights[:2]) and torch.equal(g1["grad"], 2 * weights[2:])

    ckpt = load_checkpoint(tmp_path / "fussl" / "teacher.pt", "teacher")
    assert ckpt["epoch"] == 2 and ckpt["extra_state"]["chosen"] in (0, 1)
    assert ckpt["extra_state"]["labels"].shape == (32, 8)
