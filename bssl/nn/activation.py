"""RPReLU (ReActNet): learnable shift, per-channel PReLU, learnable shift."""

from __future__ import annotations

import torch
from torch import nn


class RPReLU(nn.Module):
    """y = PReLU(x - gamma) + zeta per channel (written as x + bias_in, then + bias_out).

    Biases start at 0 and the PReLU slope at 0.25 as in the official code, so a fresh
    RPReLU equals a plain PReLU.
    """

    def __init__(self, channels: int, init: float = 0.25):
        super().__init__()
        self.channels = int(channels)
        self.bias_in = nn.Parameter(torch.zeros(self.channels))
        self.prelu = nn.PReLU(self.channels, init=init)
        self.bias_out = nn.Parameter(torch.zeros(self.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(x + self.bias_in.view(1, -1, 1, 1))
        return x + self.bias_out.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}"
