"""Downstream evaluation of frozen (or fine-tuned) representations.

Python API::

    from bssl.eval import evaluate, format_table
    results = evaluate("runs/cpu/student.pt", cfg, ["linear", "knn", "svm", "fewshot"], Path("runs/cpu/eval"))

`evaluate` accepts a checkpoint path (student/teacher .pt or exported .onnx), a FeatureExtractor
or any nn.Module, and returns ``{protocol: {metric, value, details, seconds, dataset, data_root,
train_split, test_split, n_train, n_test, sampling, source}}``: every number carries the data it
was measured on (``source`` is the same as one line). It also writes ``eval.json``, ``eval.md``
and (for few-shot) ``fewshot.png`` into ``out_dir``.

Linear, kNN, semi-supervised and RankMe run on the run's dataset (``data.dataset``, or
``dataset=`` here); SVM and few-shot SVM on the dataset ``svm_dataset(cfg)`` picks, at most
``eval.svm_max_train`` / ``eval.svm_max_test`` images per split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from ..utils import atomic_path, code_version, pick_device, seed_everything, write_json
from . import fewshot, knn, linear, rankme, semisup, svm, transfer  # noqa: F401  (register protocols)
from .context import EvalContext, describe_source, eval_splits, svm_dataset
from .features import (FeatureExtractor, Features, OnnxExtractor, TorchExtractor, as_extractor, cached_features,
                       eval_transform, extract_features, load_feature_extractor)
from .metrics import average_precision, mean_average_precision, rankme as rankme_score, voc_labels
from .registry import PROTOCOLS
from .report import comparison_rows, data_label, format_comparison, format_table, plot_fewshot

__all__ = [
    "evaluate", "format_table", "format_comparison", "plot_fewshot", "PROTOCOLS", "EvalContext", "FeatureExtractor", "TorchExtractor",
    "OnnxExtractor", "Features", "load_feature_extractor", "as_extractor", "cached_features", "extract_features",
    "eval_transform", "eval_splits", "average_precision", "mean_average_precision", "rankme_score", "voc_labels",
    "protocol_names", "svm_dataset", "describe_source", "data_label", "comparison_rows",
]


def protocol_names() -> list:
    return list(PROTOCOLS.names())


def evaluate(extractor_or_path: Any, cfg: Dict[str, Any], protocols: Optional[Sequence[str]], out_dir: Path,
             dataset: Optional[str] = None, data_root: Optional[str] = None,
             report_path: Optional[Path] = None, name: Optional[str] = None, save: Any = None) -> Dict[str, dict]:
    """Run `protocols` (default: cfg eval.protocols) and write eval.json / eval.md / fewshot.png to out_dir.

    `save` (a folder or a bssl.classifier.ClassifierTarget): also write the linear or semisup head with the student
    as a classifier checkpoint there (docs/classifier.md)."""
    from ..config import validate

    cfg = validate(cfg)  # a partial dict from Python gets the declared defaults; a bad value fails here
    protocols = list(protocols or cfg["eval"]["protocols"])
    for p in protocols:
        PROTOCOLS.get(p)  # unknown names fail before any work
    if save is not None:
        from ..classifier import ClassifierTarget

        save = save if isinstance(save, ClassifierTarget) else ClassifierTarget(save, config=cfg)
        save.prepare(protocols, extractor_or_path, cfg)  # an existing classifier or a teacher fail before any work
    seed_everything(int(cfg["run"]["seed"]))
    device = pick_device(str(cfg["run"]["device"]))
    extractor = as_extractor(extractor_or_path, input_size=cfg["data"]["image_size"], device=device)
    model_name = name or extractor.name
    out_dir = Path(out_dir)
    ctx = EvalContext(extractor, cfg, out_dir, dataset=dataset, data_root=data_root)
    ctx.save = save
    results: Dict[str, dict] = {}
    threads = int(cfg["eval"]["threads"])  # 0: keep torch's default
    saved_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        for p in protocols:
            t0 = time.perf_counter()
            res = PROTOCOLS.get(p)(ctx)
            res["seconds"] = round(time.perf_counter() - t0, 3)
            results[p] = res
    finally:
        torch.set_num_threads(saved_threads)
    report = {"model": model_name, "extractor_key": extractor.key, "input_size": extractor.input_size,
              "bssl_version": code_version(), "results": results}
    if "fewshot" in results:
        report["fewshot_plot"] = str(plot_fewshot({model_name: results["fewshot"]}, out_dir / "fewshot.png"))
    write_json(report_path or out_dir / "eval.json", report)
    md = format_table(results, title=f"Downstream evaluation: {model_name}")
    with atomic_path(out_dir / "eval.md") as tmp:
        tmp.write_text(md)
    return results

