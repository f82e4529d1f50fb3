"""`bssl run`: teacher -> BSSL stage 1+2 -> export -> profile/bench -> downstream eval -> report.

Each step records its result in ``<out>/state.json`` as soon as it finishes, so ``--resume``
skips finished steps and the steps resume their own checkpoints. A notebook user calls
``run_pipeline(cfg, out_dir)``; the CLI is a thin wrapper around it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .errors import UserError
from .utils import code_version, seed_everything, write_json

STEPS = ("teacher", "distill", "export", "profile", "bench", "eval", "classifier", "report")


def prepare_run_dir(out_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to mix runs: an existing run folder needs --resume (continue) or --force (start over)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path {out_dir} exists and is not a folder; choose another --out")
    has_run = out_dir.is_dir() and any(out_dir.iterdir())
    if resume:
        if not (out_dir / "state.json").exists():
            raise UserError(f"--resume: {out_dir} holds no bssl run (no state.json); drop --resume to start a new run")
        return
    if has_run:
        if not force:
            raise UserError(f"output folder {out_dir} already holds a run; pass --resume to continue it or --force to start over")
        if (out_dir / "state.json").exists() or (out_dir / "report.json").exists():
            shutil.rmtree(out_dir)
        else:
            raise UserError(f"--force: {out_dir} is not empty and is not a bssl run folder; refusing to delete it, choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def _silent(_msg: str) -> None:
    pass


class RunState:
    def __init__(self, out_dir: Path, cfg: Dict[str, Any], read_only: bool = False):
        self.path = Path(out_dir) / "state.json"
        self.read_only = read_only  # the non-zero ranks of a torchrun job: rank 0 owns state.json
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
            if self.data.get("config") != cfg:
                raise UserError(
                    f"--resume: the config differs from the one {self.path} was started with; "
                    "resume with the same --preset/--set, or start a new run with --force"
                )
        else:
            self.data = {"config": cfg, "version": code_version(), "steps": {}}
            self.save()

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def result(self, step: str) -> Any:
        return self.data["steps"][step]["result"]

    def record(self, step: str, result: Any, seconds: float) -> None:
        self.data["steps"][step] = {"result": result, "seconds": round(seconds, 2)}
        self.save()

    def save(self) -> None:
        if not self.read_only:
            write_json(self.path, self.data)


def validate_inputs(cfg: Dict[str, Any], teacher: Optional[Path] = None) -> Dict[str, Any]:
    """Check the teacher file and build both data splits; a mistake raises UserError before any folder exists."""
    if teacher is not None:
        if not Path(teacher).is_file():
            raise UserError(f"teacher checkpoint {teacher} does not exist; pass a bssl, MoCo/SimSiam .pth.tar or "
                            "torchvision file, or leave the teacher out to train one")
        from bssl.teachers import load_teacher
        load_teacher(teacher)
    from .data.summary import summarize
    return summarize(cfg)


def run_pipeline(cfg: Dict[str, Any], out_dir: Path, *, resume: bool = False, force: bool = False,
                 teacher: Optional[Path] = None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the whole path on cfg['data'] and write report.json / report.md in out_dir."""
    from .train import distributed as D

    out_dir = Path(out_dir).resolve()  # steps record absolute paths: resume works from any folder
    if not D.is_main():  # under torchrun: rank 0 speaks and writes the run folder; the others train beside it
        log = _silent

    # Validate every input before the run folder is touched, so a mistake leaves nothing behind.
    data_summary = D.agree(lambda: validate_inputs(cfg, teacher))
    from .data.summary import format_summary
    log("[bssl run] data\n" + "\n".join("  " + line for line in format_summary(data_summary).splitlines()))
    fresh = not (resume and (out_dir / "state.json").exists())
    D.agree(lambda: prepare_run_dir(out_dir, resume=resume, force=force) if D.is_main() else None)
    state = D.agree(lambda: RunState(out_dir, cfg) if D.is_main() else None)
    if state is None:  # the other ranks read what rank 0 wrote
        state = RunState(out_dir, cfg, read_only=True)
    seed = int(cfg["run"]["seed"])
    seed_everything(seed)
    try:
        report = _run_steps(cfg, out_dir, state, data_summary, resume, teacher, log, seed)
    except BaseException:
        if D.is_main() and fresh and not state.data["steps"] and not any(out_dir.rglob("*.pt")):
            # nothing finished or checkpointed: a folder holding only state.json and logs would only make
            # the rerun ask for --force
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return report


def _run_steps(cfg: Dict[str, Any], out_dir: Path, state: RunState, data_summary: Dict[str, Any], resume: bool,
               teacher: Optional[Path], log: Callable[[str], None], seed: int) -> Dict[str, Any]:

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if state.done(name):
            log(f"[bssl run] {name}: already done, skipping")
            return state.result(name)
        log(f"[bssl run] {name} ...")
        t0 = time.perf_counter()
        result = fn()
        state.record(name, result, time.perf_counter() - t0)
        log(f"[bssl run] {name}: done in {time.perf_counter() - t0:.1f}s")
        return result

    def do_teacher():
        if teacher is not None:
            return {"checkpoint": str(Path(teacher).resolve()), "imported": True}
        from bssl.teachers import train_teacher
        return _jsonable(train_teacher(cfg, out_dir / "teacher", resume=resume))

    teacher_res = step("teacher", do_teacher)

    def do_distill():
        from bssl.distill import run_distill
        return _jsonable(run_distill(cfg, teacher_res["checkpoint"], out_dir / "distill", resume=resume))

    distill_res = step("distill", do_distill)
    student_ckpt = distill_res["checkpoint"]

    # Under torchrun the training steps ran on every rank; the rest (export, measurement, evaluation, report)
    # is rank 0's alone, so the others leave the process group and stop here.
    from .train import distributed as D
    if D.is_distributed():
        D.barrier()
        main = D.is_main()
        D.shutdown()
        if not main:
            return {}

    def do_export():
        from bssl.export import export_model
        exp_cfg = cfg["export"]
        results = []
        for fmt in exp_cfg["formats"]:
            targets = exp_cfg["tvm_targets"] if fmt == "tvm" else [None]
            for target in targets:
                results.append(_jsonable(export_model(student_ckpt, fmt, out_dir / "export", target=target)))
        return results

    export_res = step("export", do_export)

    def do_profile():
        from bssl.models import load_student
        from bssl.profile import profile_model
        model = load_student(student_ckpt)
        prof = profile_model(model, cfg["data"]["image_size"])
        prof.pop("layers", None)
        return _jsonable(prof)

    profile_res = step("profile", do_profile)

    def do_bench():
        from bssl.bench import run_benchmarks
        b = cfg["bench"]
        # the student checkpoint, the FP teacher it replaces, and the deployable files it was exported to
        models = [student_ckpt, teacher_res["checkpoint"]] + [e["path"] for e in export_res if e["format"] in ("tvm", "lce")]
        report = run_benchmarks(models, b["backends"], int(b["threads"]), int(cfg["data"]["image_size"]),
                                int(b["runs"]), int(b["warmup"]), out_dir / "bench",
                                batch_sizes=(1, int(b["batch"])), budget_s=float(b["budget_s"]), seed=seed)
        # a backend that cannot run a given file (torch on a .so) is not a result: keep measured and unavailable rows
        report["rows"] = [r for r in report["rows"] if r.get("status") != "skipped"]
        return _jsonable(report)

    bench_res = step("bench", do_bench)

    # on labelled single-label data the linear probe's head becomes a deployable classifier of the user's classes
    protocols = cfg["eval"]["protocols"]
    make_classifier = "linear" in protocols and not data_summary["multilabel"]

    def do_eval():
        from bssl.eval import evaluate
        save = None
        if make_classifier:
            from bssl.classifier import ClassifierTarget
            save = ClassifierTarget(out_dir / "classifier", force=True, config=cfg, protocol="linear")
        # the teacher's probe head too: the FP (and int8) classifier the binary one is weighed against
        teacher_save = None
        if make_classifier:
            from bssl.classifier import FloatClassifierTarget
            teacher_save = FloatClassifierTarget(out_dir / "classifier" / "teacher", config=cfg)
        res = {"student": _jsonable(evaluate(student_ckpt, cfg, protocols, out_dir / "eval" / "student", save=save)),
               "teacher": _jsonable(evaluate(teacher_res["checkpoint"], cfg, protocols, out_dir / "eval" / "teacher",
                                             save=teacher_save))}
        # The same architecture with random weights on the same probes: the floor that shows learning.
        random_ckpt = _random_student_checkpoint(student_ckpt, out_dir / "eval" / "random-init.pt", seed=seed)
        res["random-init student"] = _jsonable(evaluate(random_ckpt, cfg, protocols, out_dir / "eval" / "random"))
        return res

    eval_res = step("eval", do_eval)

    def do_classifier():
        """Export the student + linear head with the class names, and score the deployed files themselves; beside
        them the teacher + its linear head as ONNX FP32 and int8 (calibrated on the run's own training images)."""
        from bssl.bench.onnx_files import quantize_int8
        from bssl.classifier import calibration_batches, evaluate_accuracy, load_predictor
        from bssl.export import export_model
        folder = out_dir / "classifier"
        clf = folder / "classifier.pt"
        runs, warmup = int(cfg["bench"]["runs"]), int(cfg["bench"]["warmup"])
        rows = []
        for fmt in ("bssl", "onnx"):
            exp = _jsonable(export_model(clf, fmt, folder / "export"))
            res = evaluate_accuracy(exp["path"], cfg, folder / f"accuracy-{fmt}", compare=clf)
            rows.append({"model": "binary student", "format": fmt, "export": exp, "accuracy": _jsonable(res),
                         "latency_ms": _latency(exp["path"], runs, warmup)})
        fp32 = folder / "teacher" / "model.onnx"
        if fp32.is_file():  # absent in runs whose eval step finished before the FP reference was saved
            int8 = quantize_int8(fp32, fp32.with_name("model.int8.onnx"), calibration_batches(
                cfg, load_predictor(fp32).preprocess, folder / "teacher", count=64, seed=seed))
            for fmt, path in (("onnx", fp32), ("onnx-int8", int8)):
                res = evaluate_accuracy(path, cfg, folder / "teacher" / f"accuracy-{fmt}")
                rows.append({"model": "FP teacher", "format": fmt,
                             "export": {"format": fmt, "path": str(path), "bytes": path.stat().st_size},
                             "accuracy": _jsonable(res), "latency_ms": _latency(path, runs, warmup)})
        return {"checkpoint": str(clf), "rows": rows}

    classifier_res = step("classifier", do_classifier) if make_classifier else None

    report = {
        "bssl_version": code_version(),
        "preset": cfg["preset"]["name"],
        "config": cfg,
        "data": data_summary,
        "teacher": teacher_res,
        "distill": distill_res,
        "export": export_res,
        "profile": profile_res,
        "bench": bench_res,
        "eval": eval_res,
        "classifier": classifier_res,
        "seconds": {k: v["seconds"] for k, v in state.data["steps"].items()},
    }
    write_json(out_dir / "report.json", report)
    from .report import render_markdown
    md = render_markdown(report, out_dir)
    (out_dir / "report.md").write_text(md)
    state.record("report", {"json": str(out_dir / "report.json"), "markdown": str(out_dir / "report.md")}, 0.0)
    return report


def _latency(path: str | Path, runs: int, warmup: int) -> Dict[str, Any]:
    """p50 / min latency of one image through a deployed classifier, batch 1, 1 thread: model.bssl in the native
    runtime, .onnx in onnxruntime."""
    import numpy as np

    if str(path).endswith(".bssl"):
        from . import runtime

        model = runtime.load(path, threads=1)
        shape, run, engine = (1, *model.input_shape), model.run, "bssl runtime"
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = (1, *inp.shape[1:])
        run, engine = (lambda x: sess.run(None, {inp.name: x})), f"onnxruntime {ort.__version__}"
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append(1000 * (time.perf_counter() - t0))
    return {"p50": float(np.median(times)), "min": float(min(times)), "runs": runs, "engine": engine}


def _random_student_checkpoint(student_ckpt: str, path: Path, seed: int) -> str:
    """A student of the same spec with seeded random weights, for the learning floor."""
    from bssl.models import build_model, load_student, save_student
    trained = load_student(student_ckpt)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 7919)  # its own stream: the same floor on every run and resume
        rand = build_model(**trained.spec)
    save_student(path, rand, config={"note": "random-init baseline of the same architecture"})
    return str(path)


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so state.json and report.json hold plain data."""
    from .utils import _json_default
    return json.loads(json.dumps(obj, default=_json_default))
