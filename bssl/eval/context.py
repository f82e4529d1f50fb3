"""What every protocol needs: the extractor, the eval config, and cached features per split."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..data import DATASETS, build_dataset
from ..data.subset import RowSubset, dataset_labels, stratified_rows  # the draw data.train_subset uses too
from ..errors import UserError
from .features import FeatureExtractor, Features, cached_features

# Options datasets take from [data] / [eval] when their factory accepts them (sizes of embedded data,
# the seed and share of a held-out split drawn from train/).
_EMBEDDED_OPTIONS = ("num_samples", "image_size", "num_classes", "seed", "holdout_fraction")
# Datasets drawn by a generator: a run on them has no real images for the SVM protocols.
GENERATED = ("shapes", "shapes-multilabel")


def eval_splits(name: str) -> Tuple[str, str]:
    """(train split, test split) of a dataset: the factory's `eval_splits` attribute, else train and "heldout"
    (bssl.data.heldout_split: val/ or test/ of an image folder, else a seeded split; a release's test split)."""
    return tuple(getattr(DATASETS.get(name), "eval_splits", ("train", "heldout")))


def svm_dataset(cfg: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """(name, root) of the dataset the SVM and few-shot SVM protocols run on; the one place that decides it.

    `cfg` is the run's config ([data] already holding any `bssl eval --dataset/--data-root`). In order:

    1. eval.svm_dataset other than "auto" forces a dataset: "voc2007" (root eval.voc_root, or data.root
       when the run itself is on VOC2007), the run's own dataset (root data.root) or an embedded dataset
       (no root). Other on-disk datasets have no root key here: evaluate them with `bssl eval --dataset`.
    2. eval.voc_root set: VOC2007 at that folder, the published VOC07 protocol (20 classes, multi-label).
    3. The run is on generated data (shapes): its multi-label counterpart, shapes-multilabel.
    4. Otherwise the run's own dataset (imagefolder, cifar10, stl10, digits, ...): one-vs-rest over its classes.
    """
    from ..config import validate

    cfg = validate(cfg)
    data, ecfg = cfg["data"], cfg["eval"]
    run_name, run_root = str(data["dataset"]), data["root"] or None
    voc_root = ecfg["voc_root"] or None
    forced = ecfg["svm_dataset"]
    if forced != "auto":
        factory = DATASETS.get(forced)  # unknown names fail here with the list of known ones
        if forced == "voc2007":
            root = voc_root or (run_root if run_name == "voc2007" else None)
            if root is None:
                raise UserError("eval.svm_dataset = voc2007 needs the VOC2007 folder: set eval.voc_root "
                                "(or pass --voc-root DIR to bssl eval)")
            return forced, root
        if forced == run_name:
            return run_name, run_root
        if "num_samples" in inspect.signature(factory).parameters:  # embedded: generated or bundled
            return forced, None
        raise UserError(f"eval.svm_dataset = {forced} is an on-disk dataset other than the run's ({run_name}) and "
                        f"has no root setting; use \"auto\", voc2007 with eval.voc_root, an embedded dataset, or "
                        f"`bssl eval svm --dataset {forced} --data-root DIR`")
    if voc_root:
        return "voc2007", voc_root
    if run_name in GENERATED:
        return "shapes-multilabel", None
    return run_name, run_root


def _take_rows(feats: Features, rows: np.ndarray) -> Features:
    diff = None if feats.difficult is None else np.asarray(feats.difficult)[rows]
    return replace(feats, features=np.asarray(feats.features[rows]), targets=np.asarray(feats.targets)[rows],
                   difficult=diff, meta=dict(feats.meta))


class EvalContext:
    def __init__(self, extractor: FeatureExtractor, cfg: Dict[str, Any], out_dir: Path,
                 dataset: Optional[str] = None, data_root: Optional[str] = None):
        from ..config import validate

        cfg = validate(cfg)  # every declared key filled in: a partial dict from Python gets the defaults
        self.extractor = extractor
        self.data_cfg = dict(cfg["data"])
        if dataset:  # `bssl eval --dataset/--data-root` stands in for the run's [data] dataset
            self.data_cfg.update(dataset=dataset, root=data_root or "")
        self.cfg = dict(cfg, data=self.data_cfg)
        self.ecfg = dict(cfg["eval"])
        self.out_dir = Path(out_dir)
        self.seed = int(cfg["run"]["seed"])
        self.jobs = int(self.ecfg["jobs"])
        cache = self.ecfg["cache_dir"]
        self.cache_dir = Path(cache) if cache else self.out_dir / "feature_cache"
        self._memo: Dict[tuple, Features] = {}
        self.save = None  # bssl.classifier.ClassifierTarget: `bssl eval linear|semisup --save DIR`

    def get(self, key: str) -> Any:
        """A declared [eval] key (bssl.config.EVAL)."""
        return self.ecfg[key]

    # which datasets the protocols run on
    def primary(self) -> Tuple[str, Optional[str]]:
        """The run's dataset (or `bssl eval --dataset`): linear, kNN, semi-supervised, RankMe."""
        return str(self.data_cfg["dataset"]), self.data_cfg["root"] or None

    def svm_source(self) -> Tuple[str, Optional[str]]:
        return svm_dataset(self.cfg)

    def svm_caps(self) -> Tuple[int, int]:
        """(train, test) image caps of the SVM protocols (eval.svm_max_train / svm_max_test); 0 means the whole split."""
        return int(self.ecfg["svm_max_train"]), int(self.ecfg["svm_max_test"])

    def _options(self, name: str, split: str, root: Optional[str], prefix: str = "",
                 limit: Optional[int] = None) -> Dict[str, Any]:
        """Options for embedded datasets (sizes from [data], at most `limit`); on-disk ones take only what they accept."""
        factory = DATASETS.get(name)
        accepted = inspect.signature(factory).parameters
        train_split = eval_splits(name)[0]
        which = "train" if split == train_split else "test"
        n = self.ecfg.get(f"{prefix}num_{which}") if prefix else None
        if n is None and prefix == "":  # the transfer set keeps its own size
            n = self.data_cfg.get(f"num_{which}")
        if limit:
            n = min(int(n), limit) if n is not None else limit
        cand = {"num_samples": n, "image_size": self.data_cfg["image_size"],
                "num_classes": self.data_cfg["num_classes"], "seed": self.seed,
                "holdout_fraction": self.data_cfg["holdout_fraction"]}
        return {k: v for k, v in cand.items() if k in _EMBEDDED_OPTIONS and k in accepted and v is not None}

    def build(self, name: str, split: str, root: Optional[str], prefix: str = "", transform=None,
              limit: Optional[int] = None):
        opts = self._options(name, split, root, prefix, limit)
        return build_dataset(name, split=split, root=root, transform=transform, **opts), opts

    def _extract(self, ds, ident: Dict[str, Any]) -> Features:
        return cached_features(
            self.extractor, ds, ident, self.cache_dir if self.ecfg["cache"] else None,
            batch_size=int(self.ecfg.get("batch_size") or self.data_cfg.get("batch_size") or 128),  # None: [data]'s
            workers=self._workers(), crop_pct=self.ecfg.get("crop_pct"))

    def _workers(self) -> int:
        from ..train import loader_workers

        device = getattr(self.extractor, "device", "cpu")  # ONNX and runtime extractors run on the CPU
        return loader_workers(self.data_cfg.get("workers", "auto"), device)

    def features(self, name: str, split: str, root: Optional[str], prefix: str = "",
                 limit: Optional[int] = None) -> Features:
        """Features of one split; with `limit`, of at most that many images (meta["sample"] says which).

        Embedded datasets generate only `limit` images (each is an independent draw); on-disk ones take
        a seeded subsample, stratified by class for single-label data, before any image is decoded.
        """
        subset = int(self.data_cfg.get("train_subset") or 0)
        if subset and not prefix and split == eval_splits(name)[0] and (name, root) == self.primary():
            # the images the teacher and the student were trained on (the same seeded draw as data.train_subset)
            limit = min(limit, subset) if limit else subset
        memo_key = (name, split, root, prefix, limit or 0)
        if memo_key in self._memo:
            return self._memo[memo_key]
        ds, opts = self.build(name, split, root, prefix, limit=limit)
        total = len(ds)
        held = getattr(ds, "heldout", None)  # where a "heldout" split's images came from (bssl.data.heldout_split)
        origin = {"heldout": dict(held)} if isinstance(held, dict) else {}
        if limit and "num_samples" in opts:  # embedded: only the first `limit` images were made
            base = self._options(name, split, root, prefix).get("num_samples")
            cut = base > total if base is not None else total >= limit
            sample = {"method": "first" if cut else "all", "used": total, "available": base if cut else total,
                      "seed": None, **origin}
            feats = self._extract(ds, self._identity(name, split, root, opts))
            self._memo[memo_key] = replace(feats, meta=dict(feats.meta, sample=sample))
            return self._memo[memo_key]
        if limit and total > limit:
            full = self._memo.get((name, split, root, prefix, 0))
            labels = dataset_labels(ds) if full is None else np.asarray(full.targets)
            if labels is None:  # no label list on the dataset: extract it whole, then take the rows
                full = self.features(name, split, root, prefix)
                labels = np.asarray(full.targets)
            rows = stratified_rows(labels, limit, self.seed)
            sample = {"method": "stratified" if labels.ndim == 1 else "random", "used": len(rows),
                      "available": total, "seed": self.seed, **origin}
            if full is not None:  # the whole split is already in memory: no second pass over the images
                feats = _take_rows(full, rows)
            else:
                feats = self._extract(RowSubset(ds, rows), dict(self._identity(name, split, root, opts), sample=sample))
            self._memo[memo_key] = replace(feats, meta=dict(feats.meta, sample=sample))
            return self._memo[memo_key]
        if limit:  # the cap holds the whole split: share the uncapped entry
            self._memo[memo_key] = self.features(name, split, root, prefix)
            return self._memo[memo_key]
        feats = self._extract(ds, self._identity(name, split, root, opts))
        sample = {"method": "all", "used": total, "available": total, "seed": None, **origin}
        self._memo[memo_key] = replace(feats, meta=dict(feats.meta, sample=sample))
        return self._memo[memo_key]

    @staticmethod
    def _identity(name: str, split: str, root: Optional[str], opts: Dict[str, Any]) -> Dict[str, Any]:
        return {"dataset": name, "split": split, "root": str(Path(root).resolve()) if root else None, "options": opts}

    def pair(self, name: str, root: Optional[str], prefix: str = "",
             limits: Tuple[Optional[int], Optional[int]] = (None, None)) -> Tuple[Features, Features]:
        tr, te = eval_splits(name)
        train = self.features(name, tr, root, prefix, limits[0])
        test = self.features(name, te, root, prefix, limits[1])
        if train.classes != test.classes:
            raise UserError(f"dataset {name}: the {tr} and {te} splits have different classes "
                            f"({len(train.classes)} vs {len(test.classes)}); both must hold the same class folders")
        return train, test

    def svm_pair(self) -> Tuple[str, Optional[str], Features, Features]:
        """The SVM dataset (svm_dataset) and its capped train/test features."""
        name, root = self.svm_source()
        cap_train, cap_test = self.svm_caps()
        train, test = self.pair(name, root, limits=(cap_train or None, cap_test or None))
        return name, root, train, test

    def source(self, name: str, root: Optional[str], train, test=None) -> Dict[str, Any]:
        """What a result was measured on: dataset, root, splits, image counts (and how they were sampled), and
        `source`, the same as one human-readable line for reports. `train` / `test` are Features, an image
        count, or (count, sample dict); no `test` means the protocol used the train split only."""
        tr, te = eval_splits(name)
        (n_tr, s_tr), (n_te, s_te) = _used(train), _used(test)
        te = ((s_te or {}).get("heldout") or {}).get("split", te)  # the split "heldout" resolved to: test, val, ...
        out: Dict[str, Any] = {"dataset": name, "data_root": str(root) if root else None, "train_split": tr,
                               "test_split": te if test is not None else None, "n_train": n_tr, "n_test": n_te,
                               "sampling": {tr: s_tr, **({te: s_te} if test is not None else {})}}
        out["source"] = describe_source(out)
        return out


def _used(part) -> Tuple[Optional[int], Optional[dict]]:
    if part is None:
        return None, None
    if isinstance(part, Features):
        return len(part.features), part.meta.get("sample")
    if isinstance(part, tuple):
        return int(part[0]), part[1]
    return int(part), None


def _count(sample: Optional[dict], n: int) -> str:
    if sample and sample.get("method") != "all" and sample.get("available"):
        return f"{n:,} of {sample['available']:,}"
    return f"{n:,}"


def _split_text(split: str, sample: Optional[dict]) -> str:
    """A held-out split as the user knows it: "test", "val/" (a folder), or the seeded share of train/."""
    held = (sample or {}).get("heldout") or {}
    if held.get("source") == "folder":
        return f"{held['split']}/"
    if held.get("source") == "seeded":
        return f"held-out {held.get('fraction', 0):.0%} of train/ (seed {held.get('seed')})"
    return split


def describe_source(src: Dict[str, Any]) -> str:
    """One line, e.g. "imagefolder /data/photos, train → val (1,000 / 500 images)"."""
    where = src["dataset"] + (f" {src['data_root']}" if src.get("data_root") else "")
    sampling = src.get("sampling") or {}
    tr, te = src["train_split"], src.get("test_split")
    n_tr = _count(sampling.get(tr), src["n_train"])
    if te is None:
        text = f"{where}, {tr} ({n_tr} images)"
    else:
        text = f"{where}, {tr} → {_split_text(te, sampling.get(te))} ({n_tr} / {_count(sampling.get(te), src['n_test'])} images)"
    seeds = sorted({s["seed"] for s in sampling.values() if s and s.get("seed") is not None})
    how = [_SAMPLING_WORDS[m] for m in _SAMPLING_WORDS if any(s and s.get("method") == m for s in sampling.values())]
    if how:
        text += ", " + " / ".join(how) + (f" (seed {', '.join(map(str, seeds))})" if seeds else "")
    return text


_SAMPLING_WORDS = {"stratified": "stratified subsample", "random": "random subsample",
                   "first": "the first images generated"}
