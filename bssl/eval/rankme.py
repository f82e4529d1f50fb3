"""RankMe (Garrido et al. 2023): label-free effective rank of the representation."""

from __future__ import annotations

import numpy as np

from .context import eval_splits
from .metrics import rankme
from .registry import PROTOCOLS


@PROTOCOLS.register("rankme")
def run_rankme(ctx) -> dict:
    name, root = ctx.primary()
    train = ctx.features(name, eval_splits(name)[0], root)
    n = min(len(train.features), int(ctx.get("rankme_samples")))  # 25600 in the paper
    rows = np.random.default_rng(ctx.seed).choice(len(train.features), size=n, replace=False)
    feats = np.asarray(train.features[np.sort(rows)])
    value = rankme(feats)
    sample = {"method": "random" if n < len(train.features) else "all", "used": n, "available": len(train.features),
              "seed": ctx.seed if n < len(train.features) else None}
    return {"metric": "rank", "value": value, **ctx.source(name, root, (n, sample)),
            "details": {"n_samples": n, "feature_dim": int(feats.shape[1]), "max_rank": int(min(feats.shape))}}

