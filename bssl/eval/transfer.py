"""Transfer: the linear probe of linear.py on a second dataset (eval.transfer_dataset)."""

from __future__ import annotations

from .linear import linear_kwargs, train_linear
from .registry import PROTOCOLS


@PROTOCOLS.register("transfer")
def run_transfer(ctx) -> dict:
    name = ctx.get("transfer_dataset")
    root = ctx.get("transfer_root") or None
    train, test = ctx.pair(name, root, prefix="transfer_")
    return dict(train_linear(train, test, **linear_kwargs(ctx)), **ctx.source(name, root, train, test))
