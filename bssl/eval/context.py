"""What every protocol needs: the extractor, the eval config, and cached features per split."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..data import DATASETS, build_dataset
from ..errors import UserError
from .features import FeatureExtractor, Features, cached_features

# Embedded generated datasets take these options from [data] / [eval].
_EMBEDDED_OPTIONS = ("num_samples", "image_size", "num_classes", "seed")


def eval_splits(name: str) -> Tuple[str, str]:
    """(train split, test split) of a dataset: the factory's `eval_splits` attribute, else train/test."""
    return tuple(getattr(DATASETS.get(name), "eval_splits", ("train", "test")))


class EvalContext:
    def __init__(self, extractor: FeatureExtractor, cfg: Dict[str, Any], out_dir: Path,
                 dataset: Optional[str] = None, data_root: Optional[str] = None):
        self.extractor = extractor
        self.cfg = cfg
        self.data_cfg = dict(cfg.get("data", {}))
        self.ecfg = dict(cfg.get("eval", {}))
        self.out_dir = Path(out_dir)
        self.seed = int(cfg.get("run", {}).get("seed", 0))
        self.jobs = int(self.ecfg.get("jobs", -1))
        cache = self.ecfg.get("cache_dir")
        self.cache_dir = Path(cache) if cache else self.out_dir / "feature_cache"
        self.override_dataset = dataset
        self.override_root = data_root
        self._memo: Dict[tuple, Features] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.ecfg.get(key, default)

    # which datasets the protocols run on
    def primary(self) -> Tuple[str, Optional[str]]:
        if self.override_dataset:
            return self.override_dataset, self.override_root
        return self.data_cfg.get("dataset", "shapes"), self.data_cfg.get("root") or None

    def multilabel_source(self) -> Tuple[str, Optional[str]]:
        if self.override_dataset:
            return self.override_dataset, self.override_root
        name = self.ecfg.get("multilabel_dataset", "shapes-multilabel")
        root = self.ecfg.get("multilabel_root") or None
        return name, root

    def _options(self, name: str, split: str, root: Optional[str], prefix: str = "") -> Dict[str, Any]:
        """Options for embedded datasets (sizes from [data]); on-disk ones take only what they accept."""
        factory = DATASETS.get(name)
        accepted = inspect.signature(factory).parameters
        train_split = eval_splits(name)[0]
        which = "train" if split == train_split else "test"
        n = self.ecfg.get(f"{prefix}num_{which}")
        if n is None and prefix in ("", "multilabel_"):  # the transfer set keeps its own size
            n = self.data_cfg.get(f"num_{which}")
        cand = {"num_samples": n, "image_size": self.data_cfg.get("image_size"),
                "num_classes": self.data_cfg.get("num_classes"), "seed": self.cfg.get("run", {}).get("seed", 0)}
        return {k: v for k, v in cand.items() if k in _EMBEDDED_OPTIONS and k in accepted and v is not None}

    def build(self, name: str, split: str, root: Optional[str], prefix: str = "", transform=None):
        opts = self._options(name, split, root, prefix)
        return build_dataset(name, split=split, root=root, transform=transform, **opts), opts

    def features(self, name: str, split: str, root: Optional[str], prefix: str = "") -> Features:
        memo_key = (name, split, root, prefix)
        if memo_key not in self._memo:
            ds, opts = self.build(name, split, root, prefix)
            ident = {"dataset": name, "split": split, "root": str(Path(root).resolve()) if root else None,
                     "options": opts}
            self._memo[memo_key] = cached_features(
                self.extractor, ds, ident, self.cache_dir if self.ecfg.get("cache", True) else None,
                batch_size=int(self.ecfg.get("batch_size", self.data_cfg.get("batch_size", 128))),
                workers=int(self.data_cfg.get("workers", 0)), crop_pct=self.ecfg.get("crop_pct"))
        return self._memo[memo_key]

    def pair(self, name: str, root: Optional[str], prefix: str = "") -> Tuple[Features, Features]:
        tr, te = eval_splits(name)
        train, test = self.features(name, tr, root, prefix), self.features(name, te, root, prefix)
        if train.classes != test.classes:
            raise UserError(f"dataset {name}: the {tr} and {te} splits have different classes "
                            f"({len(train.classes)} vs {len(test.classes)}); both must hold the same class folders")
        return train, test

    def describe(self, name: str, root: Optional[str]) -> str:
        tr, te = eval_splits(name)
        return f"{name}{' (' + str(root) + ')' if root else ''} {tr}->{te}"
