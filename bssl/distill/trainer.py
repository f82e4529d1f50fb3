"""The two-stage distillation trainer (BSSL Alg. 1) shared by BSSL and the baselines.

Stage 1 trains the student with binary activations and FP weights; stage 2 makes it fully binary
and starts from stage 1's student *and* its method state (the classifier g, projectors). With
`distill.stages = 1` the student is trained fully binary from scratch for the epochs of both
stages (the "without multi-stage" ablation row at equal compute).

Runs as one process or under `torchrun --nproc_per_node N` (bssl.train: DDP, gloo on CPU, nccl on
CUDA): the frozen teacher h runs in eval mode under no_grad on every rank; the student and the
method's trainable modules (g, projectors) are one DDP module with synchronised BatchNorm;
`distill.batch_size` is the global batch, split over processes and `distill.accumulate` steps.
Rank 0 writes every file.

Layout of `out_dir`: `stage1.pt`, `stage2.pt` (kind "distill-stage"), `stage<s>/last.pt` (resume
state, removed when the stage ends), `student.pt` (kind "student"), `log.jsonl` (per epoch),
`steps.jsonl` (per logged iteration), `grad_norms.png`, `losses.png`, `distill.json`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..errors import UserError
from ..train import (Stepper, all_rng_states, batch_plan, check_precision, check_world, config_mismatch, lr_factor,
                     loader_workers, make_loader, memory_format, restore_rank_rng, train_seconds)
from ..train import distributed as D
from ..train import steps as train_steps
from ..train.optim import build_optimizer, trainable_params
from ..utils import JsonlLogger, load_checkpoint, pick_device, save_checkpoint, seed_everything, write_json
from .base import METHODS, DistillMethod
from .views import distill_views

STAGE_KIND = "distill-stage"
RESUME_KIND = "distill-resume"
_OWN_FILES = ("stage1.pt", "stage2.pt", "student.pt", "log.jsonl", "steps.jsonl", "grad_norms.png", "losses.png",
              "distill.json", "stage1/last.pt", "stage2/last.pt")
# what a resume compares with the config the run started with
_RESUME_SECTIONS = ("distill", "data")


# ---------------------------------------------------------------- teacher

def load_frozen_teacher(path, cfg: Dict[str, Any]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load h with bssl.teachers.load_teacher, freeze it (no grads, eval BN) and check its resolution."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; pass --teacher PATH of a teacher .pt "
                        "(bssl teacher) or an official MoCo/SimSiam/torchvision checkpoint")
    from bssl.teachers import load_teacher

    try:
        backbone, info = load_teacher(path)
    except UserError:
        raise
    except Exception as exc:  # corrupt or foreign files raise many types
        raise UserError(f"teacher checkpoint {path} does not load ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); pass a bssl teacher checkpoint") from None
    info = dict(info or {})
    size = int(cfg["data"]["image_size"])
    t_size = info.get("image_size", info.get("input_size"))
    if t_size is not None and int(t_size) != size:
        raise UserError(f"teacher {path} was trained on {int(t_size)} px images but data.image_size is {size}; "
                        f"distil at the teacher's resolution (--set data.image_size={int(t_size)}) or use a matching teacher")
    backbone.requires_grad_(False)
    backbone.eval()
    dim = info.get("feature_dim") or getattr(backbone, "feature_dim", None)
    with torch.no_grad():
        try:
            out = backbone(torch.zeros(2, 3, size, size))
        except Exception as exc:
            raise UserError(f"teacher {path} cannot run on {size} px inputs ({type(exc).__name__}); "
                            "use a teacher trained at data.image_size") from None
    if out.ndim != 2 or (dim is not None and out.shape[1] != int(dim)):
        raise UserError(f"teacher {path} returns features of shape {tuple(out.shape)}, expected (N, {dim})")
    info["feature_dim"] = int(out.shape[1])
    return backbone, info


# ---------------------------------------------------------------- helpers

def build_student(cfg: Dict[str, Any], num_classes: int, stage: int) -> nn.Module:
    from bssl.models import build_model

    d = cfg["distill"]
    return build_model(d["student"], num_classes=num_classes, input_size=int(cfg["data"]["image_size"]),
                       width=d["width"], stem=d["stem"], stage=stage, pad_value=float(d["pad_value"]))


def stage_plan(dcfg: Dict[str, Any], only_stage: Optional[int]) -> List[Tuple[int, int]]:
    """[(stage, epochs)] to run. stages=1 trains fully binary for the epochs of both stages."""
    stages = int(dcfg["stages"])
    e1, e2 = int(dcfg["epochs_stage1"]), int(dcfg["epochs_stage2"])
    if stages not in (1, 2):
        raise UserError(f"distill.stages must be 1 or 2, got {stages}")
    if e1 < 0 or e2 < 0 or e1 + e2 == 0:
        raise UserError(f"distill.epochs_stage1/epochs_stage2 must be >= 0 and not both 0 (got {e1}, {e2})")
    if only_stage is not None:
        if only_stage not in (1, 2):
            raise UserError(f"--stage must be 1 or 2, got {only_stage}")
        return [(only_stage, e1 if only_stage == 1 else e2)]
    if stages == 1:
        return [(2, e1 + e2)]
    return [(s, e) for s, e in ((1, e1), (2, e2)) if e > 0] if e1 > 0 else [(2, e2)]


def _load_init(path: Path, method_name: str) -> Dict[str, Any]:
    """A stage-1 checkpoint to start stage 2 from: a distill-stage checkpoint or a plain student."""
    ckpt = load_checkpoint(path, expect_kind=(STAGE_KIND, "student"))
    if ckpt["bssl_kind"] == STAGE_KIND and ckpt.get("method") != method_name:
        raise UserError(f"--init {path} was written by method {ckpt.get('method')!r}, not {method_name!r}; "
                        f"pass --method {ckpt.get('method')} or a checkpoint of this method")
    state = ckpt.get("student_state", ckpt.get("state_dict"))
    if state is None:
        raise UserError(f"--init {path} holds no student weights")
    return {"student_state": state, "method_state": ckpt.get("method_state"), "path": str(path)}



class Joint(nn.Module):
    """The student and a method's own modules as one module: the unit DDP averages gradients over.

    The teacher stays outside (frozen, no gradients) and is passed to each call."""

    def __init__(self, student: nn.Module, method: DistillMethod):
        super().__init__()
        self.student, self.method = student, method

    def forward(self, teacher: Optional[nn.Module], views: List[torch.Tensor], labels, step: int, total: int):
        # BSSL's KL and L_FS are means of per-sample terms, so DDP's average of the shards' means is
        # the global mean and nothing is gathered; its two batch statistics (fs_center's mean of h, the
        # infomax marginal of g) are all-reduced inside the loss. The direct baselines that need the
        # global batch (MoCo v2's queue, SimCLR's negatives) gather inside bssl.teachers' methods.
        return self.method.loss(self.student, teacher, views, labels, step, total)


def stage_modules(cfg: Dict[str, Any], dcfg: Dict[str, Any], s: int, method_cls, tinfo: Dict[str, Any],
                  num_labels: int, device: torch.device, prev: Optional[Dict[str, Any]] = None,
                  fmt: torch.memory_format = torch.contiguous_format):
    """Student, method and the module the step runs through (DDP with synchronised BN under torchrun)."""
    probe = method_cls.student_num_classes(dcfg, num_labels)
    student = build_student(cfg, probe, s)
    method: DistillMethod = method_cls(student, tinfo, dcfg, num_labels=num_labels)
    if prev is not None:
        try:
            student.load_state_dict(prev["student_state"], strict=True)
        except RuntimeError as exc:
            raise UserError(f"stage-1 checkpoint {prev['path']} does not fit this student "
                            f"({str(exc).splitlines()[0][:160]}); use the same [distill] student/width/stem") from None
        if prev.get("method_state") is not None:
            try:
                method.load_state_dict(prev["method_state"], strict=True)
            except RuntimeError as exc:
                raise UserError(f"stage-1 checkpoint {prev['path']} holds a method state that does not fit "
                                f"({str(exc).splitlines()[0][:160]})") from None
    joint = Joint(student, method)
    if D.is_distributed():
        # converting replaces BN children in place, so student and method see the synchronised layers
        sync_bn = dcfg.get("sync_bn", "auto")
        if sync_bn is True or (sync_bn == "auto" and method_cls.needs_global_bn):
            joint = D.convert_sync_batchnorm(joint, device)
        elif sync_bn == "auto":
            # BURN's setting: global statistics in the heads (g, projector), per-process ones in the
            # student backbone, whose ~30 BN layers would each add a collective per view and pass
            D.convert_sync_batchnorm(method, device)
    joint.to(device, memory_format=fmt)
    model: nn.Module = joint
    if D.is_distributed():
        # the direct baselines leave the student's classifier l unused
        model = DDP(joint, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    return student, method, model


def stage_stepper(student: nn.Module, method: DistillMethod, dcfg: Dict[str, Any], device: torch.device,
                  total_steps: int, warmup_steps: int, precision: str = "fp32") -> Stepper:
    optimizer = build_optimizer([student, method], dcfg, section="distill")
    return Stepper(optimizer, trainable_params([student, method]), device=device, precision=precision,
                   clip=float(dcfg["grad_clip"]), base_lr=float(dcfg["lr"]),
                   lr_factor=lambda i: lr_factor(i, total_steps, warmup_steps),
                   grad_groups={k: list(v) for k, v in method.grad_groups(student).items()})


def distill_forward(teacher: Optional[nn.Module], device: torch.device, step: int, total: int,
                    fmt: torch.memory_format = torch.contiguous_format):
    """forward(model, batch) for Stepper.step: one micro-batch of (views, labels), images in memory format fmt."""
    def forward(model, batch):
        views, labels = batch
        if not isinstance(views, (list, tuple)):
            views = [views]
        views = [v.to(device, non_blocking=True, memory_format=fmt) for v in views]
        labels = labels.to(device) if torch.is_tensor(labels) else labels
        return model(teacher, views, labels, step, total)
    return forward


# ---------------------------------------------------------------- main entry

def run_distill(cfg: Dict[str, Any], teacher_path, out_dir, resume: bool = False, *, method: Optional[str] = None,
                stage: Optional[int] = None, init=None, progress: Optional[bool] = None,
                stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Distil the teacher at `teacher_path` into a binary student; see the module docstring for the layout.

    Returns `checkpoint` (final student .pt, kind "student"), `stage_checkpoints`, `history`
    (one dict per epoch), `plots` (PNG paths), `seconds` (this call), `train_seconds` (the epochs over every
    invocation of a resumed run), plus `method` and `stages`.
    `stage` runs one stage only; stage 2 alone needs `init` (a stage-1 checkpoint) or an
    existing `out_dir/stage1.pt`. `resume=True` continues whatever `out_dir` holds (finished stages
    are kept, an unfinished one restarts from its last epoch; the config and number of processes
    must match) and starts fresh when it holds nothing. `stop_after=E` returns after E epochs of
    the plan counted from its start (train in chunks; resume continues) with `checkpoint` None.
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    dcfg = dict(cfg["distill"])
    method_name = method or str(dcfg["method"])
    method_cls = METHODS.get(method_name)
    plan = stage_plan(dcfg, stage)
    # distill.seed varies the student's initialisation and data order while run.seed keeps the data fixed
    seed = int(cfg["run"]["seed"] if dcfg["seed"] is None else dcfg["seed"])
    device = pick_device(str(cfg["run"]["device"]))
    D.init_from_env(device)
    if D.is_distributed() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    main = D.rank() == 0

    def check():
        """Every input, on every rank, before anything is written."""
        bplan = batch_plan("distill", int(dcfg["batch_size"]), int(dcfg["accumulate"]))
        precision = check_precision("distill", str(dcfg["precision"]), device)
        # direct SSL baselines take their method settings from the run's [teacher] section
        teacher, tinfo = (None, {"ssl_config": dict(cfg["teacher"])})
        if method_cls.needs_teacher:
            if teacher_path is None:
                raise UserError(f"method {method_name!r} needs --teacher PATH")
            teacher, tinfo = load_frozen_teacher(teacher_path, cfg)
        init_state = None
        if plan[0][0] == 2 and len(plan) == 1 and (stage == 2 or init is not None):
            if init is not None:
                init_state = _load_init(Path(init), method_name)
            elif (out_dir / "stage1.pt").exists():
                init_state = _load_init(out_dir / "stage1.pt", method_name)
            else:
                raise UserError(f"stage 2 needs a stage-1 checkpoint: pass --init PATH (a stage1.pt written by "
                                f"bssl distill) or run stage 1 first into {out_dir}")
        from bssl.data import dataset_from_config

        dataset = dataset_from_config(cfg, "train", transform=distill_views(cfg, method_cls.num_views, method_cls.pipeline))
        if len(dataset) < bplan.global_batch:
            raise UserError(f"the training set has {len(dataset)} images, fewer than distill.batch_size="
                            f"{dcfg['batch_size']}; lower the batch size")
        num_labels = int(getattr(dataset, "num_classes", 0) or 0)
        if method_cls.needs_labels and (num_labels == 0 or getattr(dataset, "multilabel", False)):
            raise UserError(f"method {method_name!r} needs a single-label dataset; {cfg['data']['dataset']} has none")
        if resume:
            for s, _ in plan:
                for path in (out_dir / f"stage{s}.pt", out_dir / f"stage{s}" / "last.pt"):
                    if path.exists():
                        _check_resumable(path, cfg, method_name)
        return bplan, precision, teacher, tinfo, init_state, dataset, num_labels

    bplan, precision, teacher, tinfo, init_state, dataset, num_labels = D.agree(check)

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in _OWN_FILES:
                p = out_dir / name
                if p.exists():
                    p.unlink()
    D.barrier()
    fmt = memory_format(dcfg.get("channels_last", "auto"), device, precision)
    if teacher is not None:
        teacher.to(device, memory_format=fmt)
    logger = JsonlLogger(out_dir / "log.jsonl") if main else None
    show = (progress if progress is not None else None) if main else False

    history: List[Dict[str, Any]] = []
    steps: List[Dict[str, Any]] = []
    stage_ckpts: List[str] = []
    student = None
    prev: Optional[Dict[str, Any]] = init_state
    epochs_before = 0

    def _stopped():
        return {"checkpoint": None, "stage_checkpoints": stage_ckpts, "history": history, "plots": [],
                "seconds": round(time.time() - t0, 2), "train_seconds": train_seconds(history),
                "method": method_name, "stages": [s for s, _ in plan],
                "teacher": str(teacher_path) if teacher_path else None, "stopped_after": stop_after}

    for s, epochs in plan:
        done = out_dir / f"stage{s}.pt"
        if resume and done.exists():
            ck = load_checkpoint(done, expect_kind=STAGE_KIND)
            history += ck.get("history", [])
            steps += ck.get("steps", [])
            prev = {"student_state": ck["student_state"], "method_state": ck["method_state"], "path": str(done)}
            stage_ckpts.append(str(done))
            student = None
            epochs_before += epochs
            continue
        budget = None if stop_after is None else int(stop_after) - epochs_before
        if budget is not None and budget <= 0:
            return _stopped()
        seed_everything(seed + 1000 * s)
        student, st_hist, st_steps, finished = _train_stage(
            cfg, dcfg, s, epochs, method_name, method_cls, teacher, tinfo, num_labels, dataset, device, out_dir,
            prev, resume, logger, show, bplan, precision, fmt, seed, budget)
        history += st_hist
        steps += st_steps
        if not finished:
            return _stopped()
        epochs_before += epochs
        stage_ckpts.append(str(done))
        ck = load_checkpoint(done, expect_kind=STAGE_KIND)
        prev = {"student_state": ck["student_state"], "method_state": ck["method_state"], "path": str(done)}

    if student is None:  # every stage was already done: rebuild the last one
        s_last = plan[-1][0]
        ck = load_checkpoint(out_dir / f"stage{s_last}.pt", expect_kind=STAGE_KIND)
        student = build_student(cfg, int(ck["student_num_classes"]), s_last)
        student.load_state_dict(ck["student_state"])

    final = out_dir / "student.pt"
    plots = []
    if main:
        from bssl.models import save_student

        student.cpu()
        save_student(final, student, cfg, method=method_name, teacher=str(teacher_path) if teacher_path else None,
                     history=history)
        with (out_dir / "steps.jsonl").open("w") as fh:
            import json
            for rec in steps:
                fh.write(json.dumps(rec) + "\n")
        from .plots import plot_grad_norms, plot_losses

        plots = [p for p in (plot_grad_norms(steps, out_dir / "grad_norms.png", title=f"{method_name}: gradient norms"),
                             plot_losses(history, out_dir / "losses.png", title=f"{method_name}: losses")) if p]
    result = {"checkpoint": str(final), "stage_checkpoints": stage_ckpts, "history": history,
              "plots": [str(p) for p in plots], "seconds": round(time.time() - t0, 2),
              "train_seconds": train_seconds(history), "method": method_name,
              "stages": [s for s, _ in plan], "teacher": str(teacher_path) if teacher_path else None}
    if main:
        write_json(out_dir / "distill.json", result)
    D.barrier()
    return result


def _check_resumable(path: Path, cfg: Dict[str, Any], method_name: str) -> None:
    ck = load_checkpoint(path, expect_kind=(STAGE_KIND, RESUME_KIND))
    if ck.get("method") != method_name:
        raise UserError(f"--resume: {path} belongs to method {ck.get('method')!r}, not {method_name!r}")
    bad = config_mismatch(ck.get("config", {}), cfg, _RESUME_SECTIONS)
    if bad:
        raise UserError(f"--resume: {path} was written with a different {bad}; resume with the same "
                        "preset and --set values, or start over with --force")
    if ck["bssl_kind"] == RESUME_KIND:
        check_world(path, ck.get("world_size"), D.world_size())


def _train_stage(cfg, dcfg, s: int, epochs: int, method_name: str, method_cls, teacher, tinfo, num_labels: int,
                 dataset, device, out_dir: Path, prev, resume: bool, logger: Optional[JsonlLogger], show, bplan,
                 precision: str, fmt: torch.memory_format, seed: int, budget: Optional[int]):
    """Train one stage; writes out_dir/stage<s>.pt and returns (student, history, steps, finished).

    With `budget` epochs left before a stop, returns finished=False after them (last.pt kept)."""
    main = D.rank() == 0
    student, method, model = stage_modules(cfg, dcfg, s, method_cls, tinfo, num_labels, device, prev, fmt)
    probe = method_cls.student_num_classes(dcfg, num_labels)
    steps_per_epoch = len(dataset) // bplan.global_batch
    total = max(steps_per_epoch * epochs, 1)
    warm = int(round(float(dcfg["warmup_epochs"]) * steps_per_epoch))
    stepper = stage_stepper(student, method, dcfg, device, total, warm, precision)
    log_every = max(1, total // 2000)

    history: List[Dict[str, Any]] = []
    steps: List[Dict[str, Any]] = []
    start_epoch = 0
    last = out_dir / f"stage{s}" / "last.pt"
    if resume and last.exists():
        ck = load_checkpoint(last, expect_kind=RESUME_KIND)
        student.load_state_dict(ck["student_state"])
        method.load_state_dict(ck["method_state"])
        stepper.optimizer.load_state_dict(ck["optimizer"])
        stepper.load_state_dict(ck.get("trainer", {}))
        history, steps, start_epoch = list(ck["history"]), list(ck["steps"]), int(ck["epoch"]) + 1
        restore_rank_rng(ck["rng"])
    elif D.is_distributed():
        # identical initialisation above; from here each rank augments its shard with its own streams
        seed_everything(seed * 1000 + 1000 * s + 17 + D.rank())

    workers = loader_workers(cfg["data"]["workers"], device)
    for epoch in range(start_epoch, epochs):
        loader = make_loader(dataset, bplan, seed * 100003 + 1000 * s, epoch, workers=workers,
                             pin_memory=device.type == "cuda")
        model.train()
        sums: Dict[str, float] = {}
        n = 0
        t_ep = time.time()
        bar = tqdm(train_steps(loader, bplan.accumulate), total=steps_per_epoch, leave=False,
                   desc=f"distill {method_name} stage {s} epoch {epoch + 1}/{epochs}",
                   disable=None if show is None else not show)
        for micro in bar:
            step = epoch * steps_per_epoch + n
            try:
                rec = stepper.step(model, step, micro, distill_forward(teacher, device, step, total, fmt))
            except FloatingPointError as exc:
                raise UserError(f"the {method_name} {exc} at stage {s}, step {step}; "
                                f"lower distill.lr (now {dcfg['lr']}) or set distill.grad_clip") from None
            method.after_step(student, step, total)
            for k, v in rec.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            if step % log_every == 0:
                steps.append({"stage": s, "step": step, **{k: round(v, 6) for k, v in rec.items()}})
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        epoch_rec = {"stage": s, "epoch": epoch + 1, "steps": n, **{k: v / max(n, 1) for k, v in sums.items()},
                     "seconds": round(time.time() - t_ep, 2)}
        history.append(epoch_rec)
        rng = all_rng_states()
        if main:
            save_checkpoint(last, RESUME_KIND, {
                "method": method_name, "stage": s, "epoch": epoch, "student_state": student.state_dict(),
                "method_state": method.state_dict(), "optimizer": stepper.optimizer.state_dict(),
                "trainer": stepper.state_dict(), "history": history, "steps": steps, "rng": rng,
                "world_size": D.world_size(),
            }, cfg)
            logger.log(**epoch_rec)
        D.barrier()
        if budget is not None and epoch + 1 >= budget and epoch + 1 < epochs:
            return student, history, steps, False
    if main:
        save_checkpoint(out_dir / f"stage{s}.pt", STAGE_KIND, {
            "method": method_name, "stage": s, "student_spec": dict(student.spec), "student_num_classes": probe,
            "student_state": {k: v.cpu() for k, v in student.state_dict().items()},
            "method_state": {k: v.cpu() for k, v in method.state_dict().items()},
            "history": history, "steps": steps, "world_size": D.world_size(),
        }, cfg)
        if last.exists():
            last.unlink()
            try:
                last.parent.rmdir()
            except OSError:
                pass
    D.barrier()
    return student, history, steps, True
