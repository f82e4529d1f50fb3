"""Sign binarizers: the hard forward sign and its ApproxSign (Bi-Real) backward, and RSign."""

from __future__ import annotations

import torch
from torch import nn


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """sign with the project convention: -1 where x < 0, +1 elsewhere (zero maps to +1)."""
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def approx_sign_grad(x: torch.Tensor) -> torch.Tensor:
    """d/dx of ApproxSign: 2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere, i.e. relu(2 - 2|x|)."""
    return torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


class _ApproxSignFn(torch.autograd.Function):
    """Hard sign forward, ApproxSign gradient backward, in one node (half the memory and time of
    building the surrogate polynomial and differentiating it)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * approx_sign_grad(x)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """Hard sign forward, ApproxSign gradient backward.

    Only when a gradient is needed does this go through an autograd.Function; under no_grad
    (inference, torch.export, ONNX export) the graph holds plain ops, just the hard sign.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _ApproxSignFn.apply(x)
    return hard_sign(x)


class RSign(nn.Module):
    """ReActNet RSign: sign(x + b) with a learnable per-channel bias b.

    `bias` has shape (C,) (not the official (1, C, 1, 1)) so it reads like every other
    per-channel parameter; it is broadcast over N, H, W in forward. Initialised to 0.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)
        self.bias = nn.Parameter(torch.zeros(self.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return approx_sign(x + self.bias.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.channels}"
