"""bssl.train in one process: accumulation equals the large batch, the global batch split, precision
choices, bf16 autocast on CPU, the optimiser factory's groups, RNG state and resume compatibility."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from bssl.config import apply_overrides, load_preset
from bssl.errors import UserError
from bssl.train import (Stepper, batch_plan, build_optimizer, check_precision, config_mismatch, lr_factor,
                        rng_state, set_rng_state, steps)
from bssl.train.loop import loader_workers, make_loader, memory_format

CPU = torch.device("cpu")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _train(micro_batches_per_step, optimizer="adamw", clip=0.5):
    """3 steps of a per-sample regression loss, each step's global batch of 8 given as micro-batches."""
    model = _mlp()
    opt = build_optimizer([model], {"optimizer": optimizer, "lr": 0.05, "weight_decay": 0.1}, section="distill")
    stepper = Stepper(opt, list(model.parameters()), device=CPU, clip=clip, base_lr=0.05,
                      lr_factor=lambda i: lr_factor(i, 3, 1), grad_groups={"all": list(model.parameters())})
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(3, 8, 6, generator=gen, dtype=torch.float64), torch.randn(3, 8, 3, generator=gen, dtype=torch.float64)

    def forward(m, batch):
        xb, yb = batch
        return {"loss": ((m(xb) - yb) ** 2).sum(1).mean()}

    recs = []
    for step in range(3):
        n = micro_batches_per_step
        per = 8 // n
        batches = [(x[step, j * per:(j + 1) * per], y[step, j * per:(j + 1) * per]) for j in range(n)]
        recs.append(stepper.step(model, step, batches, forward))
    return model, recs


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "lars"])
def test_accumulating_micro_batches_equals_the_large_batch(optimizer):
    big, big_recs = _train(1, optimizer)
    for n in (2, 4):
        acc, acc_recs = _train(n, optimizer)
        for (k, a), b in zip(big.state_dict().items(), acc.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-12, rtol=1e-10), (n, k)
        for ra, rb in zip(big_recs, acc_recs):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-12)
            assert ra["grad_all"] == pytest.approx(rb["grad_all"], rel=1e-10)  # measured before clipping
            assert ra["lr"] == rb["lr"]
    assert not torch.allclose(_mlp()[0].weight, big[0].weight)
    assert big_recs[0]["grad_all"] > 0.5  # clipping was active


def test_global_batch_split_and_precision_choices():
    plan = batch_plan("distill", 64, 2, world=4)
    assert (plan.micro_batch, plan.world, plan.accumulate) == (8, 4, 2)
    with pytest.raises(UserError, match=r"distill.batch_size = 20 does not split over 2 processes x 4 accumulation "
                                        r"steps; use a multiple of 8"):
        batch_plan("distill", 20, 4, world=2)
    with pytest.raises(UserError, match=r"teacher.batch_size = 9 does not split over 2 processes; use a multiple of 2"):
        batch_plan("teacher", 9, 1, world=2)
    assert check_precision("distill", "bf16", CPU) == "bf16"
    with pytest.raises(UserError, match="fp16' needs a CUDA device"):
        check_precision("teacher", "fp16", CPU)
    with pytest.raises(UserError, match="use one of fp32, bf16, fp16"):
        check_precision("distill", "fp8", CPU)


def test_steps_group_micro_batches_and_drop_an_incomplete_step():
    plan = batch_plan("distill", 8, 2, world=1)
    loader = make_loader(list(range(30)), plan, seed=0, epoch=0)
    groups = list(steps(loader, plan.accumulate))
    assert len(groups) == 3 and all(len(g) == 2 and len(g[0]) == 4 for g in groups)  # 30 // 8 steps
    seen = torch.cat([b for g in groups for b in g])
    assert len(set(seen.tolist())) == 24
    again = torch.cat([b for g in steps(make_loader(list(range(30)), plan, seed=0, epoch=0), 2) for b in g])
    other = torch.cat([b for g in steps(make_loader(list(range(30)), plan, seed=0, epoch=1), 2) for b in g])
    assert torch.equal(seen, again) and not torch.equal(seen, other)


def test_bf16_autocast_runs_the_distillation_step_on_cpu():
    from bssl.distill import METHODS
    from bssl.distill.trainer import distill_forward, stage_modules, stage_stepper

    cfg = apply_overrides(load_preset("smoke"), ["distill.num_pseudo_classes=16", "distill.classifier_hidden=32",
                                                 "distill.precision=\"bf16\"", "distill.lr=0.01"])
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).requires_grad_(False)
    student, method, model = stage_modules(cfg, cfg["distill"], 1, METHODS.get("bssl"), {"feature_dim": 24}, 0, CPU)
    stepper = stage_stepper(student, method, cfg["distill"], CPU, 4, 0, precision="bf16")
    dtypes = []
    hook = method.classifier.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    rec = stepper.step(model, 0, [(views, None)], distill_forward(teacher, CPU, 0, 4))
    hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)  # autocast was on
    assert np.isfinite(rec["loss"]) and rec["grad_features"] > 0
    assert all(p.dtype == torch.float32 for p in student.parameters())  # weights stay fp32
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in before.items() if v.is_floating_point())


@pytest.mark.parametrize("name", ["bssl", "direct-byol", "direct-mocov2", "direct-simclr", "s2bnn", "supervised-kl"])
def test_every_distillation_method_steps_under_bf16_on_cpu(name, tmp_path):
    """Buffers written inside the step (MoCo's queue) must accept the half-precision outputs of autocast."""
    from bssl.distill import METHODS
    from bssl.distill.trainer import distill_forward, load_frozen_teacher, stage_modules, stage_stepper
    from conftest import write_teacher

    assert sorted(METHODS.names()) == sorted(["bssl", "direct-byol", "direct-mocov2", "direct-simclr", "s2bnn",
                                              "supervised-kl"])
    cfg = apply_overrides(load_preset("smoke"), ["distill.num_pseudo_classes=16", "distill.classifier_hidden=32",
                                                 "distill.precision=\"bf16\"", "teacher.queue_size=32",
                                                 "teacher.proj_hidden=16", "teacher.proj_dim=8"])
    teacher, info = load_frozen_teacher(write_teacher(tmp_path / "teacher.pt", cfg), cfg)  # s2bnn reads its projector
    torch.manual_seed(0)
    student, method, model = stage_modules(cfg, cfg["distill"], 1, METHODS.get(name), info, 10, CPU)  # 10 labels
    stepper = stage_stepper(student, method, cfg["distill"], CPU, 4, 0, precision="bf16")
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    labels = torch.randint(0, 10, (8,))
    for step in range(2):  # the second step reads what the first wrote
        rec = stepper.step(model, step, [(views, labels)], distill_forward(teacher, CPU, step, 4))
        assert np.isfinite(rec["loss"])


@pytest.mark.parametrize("name", ["mocov2", "byol", "simsiam", "simsiam-kaug", "ensiam", "fussl", "simclr"])
def test_every_teacher_method_steps_under_bf16_on_cpu(name):
    from bssl.teachers import METHODS, build_method
    from bssl.teachers.train import make_optimizer, teacher_settings

    assert sorted(METHODS.names()) == sorted(["mocov2", "byol", "simsiam", "simsiam-kaug", "ensiam", "fussl", "simclr"])
    cfg = load_preset("smoke")
    cfg["teacher"].update(method=name, proj_hidden=16, proj_dim=8, queue_size=32, small_stem=False)
    torch.manual_seed(0)
    method, info = build_method(cfg)
    method.prepare_epoch(0, 2, {"plain_loader": None, "num_train": 8, "device": CPU})  # FUSSL: phase 1
    method.train()
    stepper = Stepper(make_optimizer(method, teacher_settings(cfg)), list(method.parameters()), device=CPU,
                      precision="bf16", base_lr=0.01, lr_factor=lambda i: 1.0)
    transform = method.views(info["image_size"])  # each method's own number and sizes of views
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(8)]  # as the datasets give them
    per_image = [transform(im) for im in images]
    views = [torch.stack([v[k] for v in per_image]) for k in range(len(per_image[0]))]

    def forward(m, batch):
        loss, logs = m(*batch)
        return {"loss": loss, **logs}

    for step in range(2):  # the second step reads what the first wrote (queues, EMA targets)
        rec = stepper.step(method, step, [(views, torch.arange(8))], forward)
        method.after_step(step + 1, 4)
        assert np.isfinite(rec["loss"])


def test_optimizer_factory_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    distill = build_optimizer([model], {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.1}, section="distill")
    assert [(len(g["params"]), g["weight_decay"]) for g in distill.param_groups] == [(2, 0.1), (4, 0.0)]
    assert isinstance(distill, torch.optim.Adam)
    lars = build_optimizer([model], {"optimizer": "lars", "lr": 0.1, "weight_decay": 1e-6}, section="teacher")
    assert [(len(g["params"]), g["lars_exclude"], g["weight_decay"]) for g in lars.param_groups] == \
        [(2, False, 1e-6), (4, True, 0.0)]
    # the teacher's methods decay every parameter, as their reference code does, and keep their groups
    groups = [{"params": list(model[3].parameters()), "fix_lr": True}, {"params": list(model[0].parameters())}]
    sgd = build_optimizer(groups, {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4}, section="teacher",
                          exclude_1d=False)
    assert [(len(g["params"]), g["weight_decay"], g.get("fix_lr")) for g in sgd.param_groups] == \
        [(2, 1e-4, True), (2, 1e-4, None)]
    with pytest.raises(UserError, match="teacher.optimizer='rmsprop' is unknown"):
        build_optimizer([model], {"optimizer": "rmsprop"}, section="teacher")


def test_fixed_lr_groups_keep_their_lr():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt = build_optimizer([{"params": list(a.parameters())}, {"params": list(b.parameters()), "fix_lr": True}],
                          {"optimizer": "sgd", "lr": 0.2}, section="teacher", exclude_1d=False)
    stepper = Stepper(opt, list(a.parameters()) + list(b.parameters()), device=CPU, base_lr=0.2,
                      lr_factor=lambda i: lr_factor(i, 10, 0))
    assert stepper.set_lr(5) == pytest.approx(0.1)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1), 0.2]


def test_rng_state_round_trip_covers_torch_python_numpy():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    torch.rand(3), random.random(), np.random.rand()
    state = rng_state()
    want = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    set_rng_state(state)
    got = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(want[0], got[0]) and want[1] == got[1] and np.array_equal(want[2], got[2])
    # older checkpoints hold the bare torch state
    torch.manual_seed(4)
    bare = torch.get_rng_state()
    x = torch.rand(2)
    set_rng_state(bare)
    assert torch.equal(torch.rand(2), x)


def test_config_mismatch_reads_checkpoints_without_the_new_keys():
    cfg = load_preset("smoke")
    old = {s: dict(v) for s, v in cfg.items() if isinstance(v, dict)}
    for key in ("precision", "accumulate"):
        old["distill"].pop(key)
    assert config_mismatch(old, cfg, ("distill", "data")) is None
    assert config_mismatch(old, apply_overrides(cfg, ["distill.accumulate=2"]), ("distill", "data")) == \
        "[distill] config (accumulate: 1 in the checkpoint, 2 now)"
    assert config_mismatch(old, apply_overrides(cfg, ["data.workers=3"]), ("distill", "data")) is None
    assert config_mismatch(old, apply_overrides(cfg, ["run.seed=5"]), ("distill", "data")) == \
        "run.seed (0 in the checkpoint, 5 now)"


def test_teacher_trains_with_accumulation_and_bf16(tmp_path):
    from bssl.teachers import train_teacher
    from bssl.utils import load_checkpoint

    torch.set_num_threads(1)
    cfg = load_preset("smoke")
    cfg["run"]["device"] = "cpu"
    cfg["data"].update(num_train=32, num_test=16, image_size=32)
    cfg["teacher"].update(method="simclr", epochs=1, batch_size=16, accumulate=2, precision="bf16", proj_hidden=16,
                          proj_dim=8, small_stem=False, knn_every=1, grad_clip=5.0)
    res = train_teacher(cfg, tmp_path)
    assert len(res["history"]) == 1 and np.isfinite(res["history"][0]["loss"])
    ckpt = load_checkpoint(res["checkpoint"], "teacher")
    assert ckpt["step"] == 2 and ckpt["world_size"] == 1 and isinstance(ckpt["rng_state"], list)
    assert set(ckpt["rng_state"][0]) >= {"torch", "python", "numpy"}
    cfg["teacher"]["precision"] = "fp16"
    with pytest.raises(UserError, match="teacher.precision = 'fp16' needs a CUDA device"):
        train_teacher(cfg, tmp_path / "fp16")


def test_bf16_step_refuses_non_finite_gradients():
    lin = nn.Linear(2, 2)
    opt = build_optimizer([lin], {"optimizer": "sgd", "lr": 0.1}, section="distill")
    stepper = Stepper(opt, list(lin.parameters()), device=CPU, precision="bf16", base_lr=0.1,
                      lr_factor=lambda i: 1.0)
    before = lin.weight.detach().clone()

    def forward(m, batch):  # a finite loss whose gradient is nan (sqrt at 0)
        return {"loss": torch.sqrt((m.weight * 0).sum()) + m(batch).sum() * 0 + 1.0}

    with pytest.raises(FloatingPointError, match="inf/nan under bf16"):
        stepper.step(lin, 0, [torch.ones(3, 2)], forward)
    assert torch.equal(lin.weight, before)  # no step was taken


def _as_old_checkpoint(path, section, rng_key):
    """Rewrite a checkpoint as the trainers before bssl.train wrote it: one torch (teacher) or
    torch+python (distill) RNG state, no world size, no scaler entry, no precision/accumulate keys."""
    ck = torch.load(path, weights_only=True)
    state = ck[rng_key][0]
    ck[rng_key] = state["torch"] if section == "teacher" else {"torch": state["torch"], "python": state["python"]}
    for key in ("world_size", "trainer"):
        ck.pop(key, None)
    for key in ("precision", "accumulate", "grad_clip", "lars_eta"):
        if section == "teacher" or key in ("precision", "accumulate"):
            ck["config"][section].pop(key, None)
    torch.save(ck, path)


def test_checkpoints_written_before_bssl_train_resume(tmp_path):
    from bssl.distill import run_distill
    from bssl.teachers import train_teacher

    torch.set_num_threads(1)
    cfg = load_preset("smoke")
    cfg["run"]["device"] = "cpu"
    cfg["data"].update(num_train=32, num_test=16, image_size=32)
    cfg["teacher"].update(method="simclr", epochs=2, batch_size=16, proj_hidden=16, proj_dim=8, small_stem=False,
                          knn_every=2)
    train_teacher(cfg, tmp_path / "t", stop_after=1)
    _as_old_checkpoint(tmp_path / "t" / "teacher.pt", "teacher", "rng_state")
    assert len(train_teacher(cfg, tmp_path / "t", resume=True)["history"]) == 2

    dcfg = apply_overrides(cfg, ["distill.method=\"direct-simclr\"", "distill.batch_size=16", "distill.epochs_stage1=2",
                                 "distill.epochs_stage2=1"])
    run_distill(dcfg, None, tmp_path / "d", progress=False, stop_after=1)
    _as_old_checkpoint(tmp_path / "d" / "stage1" / "last.pt", "distill", "rng")
    res = run_distill(dcfg, None, tmp_path / "d", resume=True, progress=False)
    assert [(h["stage"], h["epoch"]) for h in res["history"]] == [(1, 1), (1, 2), (2, 1)]


@pytest.mark.parametrize("cores, local, device, expected", [
    (2, 1, "cpu", 0),     # a CPU step uses the 2 cores itself
    (32, 1, "cpu", 8),    # a quarter of many cores, at most 8
    (32, 2, "cpu", 4),
    (12, 1, "cuda", 11),  # a GPU process keeps one core and gives the rest to the loader
    (96, 8, "cuda", 11),
    (64, 1, "cuda", 16),
    (1, 1, "cuda", 0),
])
def test_auto_workers_follow_cores_per_process_and_device(monkeypatch, cores, local, device, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert loader_workers("auto", device) == expected
    assert loader_workers(3, device) == 3


@pytest.mark.parametrize("value, ok", [("auto", True), (0, True), (4, True), (-1, False), ("many", False)])
def test_data_workers_is_auto_or_a_count(value, ok):
    setting = f'data.workers="{value}"' if isinstance(value, str) else f"data.workers={value}"
    if ok:
        assert apply_overrides(load_preset("cpu"), [setting])["data"]["workers"] == value
    else:
        with pytest.raises(UserError, match="data.workers"):
            apply_overrides(load_preset("cpu"), [setting])


def test_channels_last_resolution():
    nhwc, nchw = torch.channels_last, torch.contiguous_format
    assert memory_format("auto", "cpu", "bf16") == nchw
    assert memory_format("auto", "cuda", "bf16") == nhwc and memory_format("auto", "cuda", "fp16") == nhwc
    assert memory_format("auto", "cuda", "fp32") == nchw
    assert memory_format(True, "cpu", "fp32") == nhwc and memory_format(False, "cuda", "bf16") == nchw


def test_channels_last_distillation_trains_in_nhwc(tmp_path):
    """channels_last = true: the student's conv weights and the images are NHWC, the step still learns."""
    from bssl.distill import run_distill
    from bssl.utils import load_checkpoint
    from conftest import write_teacher

    torch.set_num_threads(1)
    cfg = apply_overrides(load_preset("smoke"), ["data.num_train=32", "data.num_test=16", "distill.batch_size=16",
                                                 "distill.num_pseudo_classes=16", "distill.classifier_hidden=32",
                                                 "distill.epochs_stage1=1", "distill.epochs_stage2=1",
                                                 "distill.channels_last=true", "run.device=\"cpu\""])
    res = run_distill(cfg, write_teacher(tmp_path / "teacher.pt", cfg), tmp_path / "run", progress=False)
    assert all(np.isfinite(h["loss"]) for h in res["history"])
    # torch.save keeps strides: the trained conv weights are still NHWC
    state = load_checkpoint(tmp_path / "run" / "stage1.pt")["student_state"]
    convs = [w for k, w in state.items() if k.endswith("weight") and w.dim() == 4 and w.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
