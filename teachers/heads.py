"""MLP heads (projectors and predictors) with the shapes of the original papers."""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn


def mlp(dims: Sequence[int], *, bn: bool = True, last_bn: bool = False, last_bn_affine: bool = True,
        bias: bool = True) -> nn.Sequential:
    """Linear layers through `dims`; BN+ReLU between layers (ReLU only when bn is False).

    `last_bn` appends a BN after the final Linear (SimSiam's projector ends in BN(affine=False)).
    """
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=bias and not (bn and (not last or last_bn))))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
    return nn.Sequential(*layers)
