"""Binary convolution and the BinaryConvBN unit (the one place every student's binary conv lives).

Stage 1 (`binary_weights=False`): binary activations, FP weights.
Stage 2 (`binary_weights=True`): weights alpha_o * sign(W_o), alpha_o = mean|W_o| per output
channel (detached), straight-through gradient masked to |W| <= 1 (the official HardBinaryConv).

The signed input is padded with `pad_value` (+1 by default, larq's pad_values=1) and convolved
with padding 0, so the float model matches the XNOR-popcount kernels bit for bit.
In stage 2 the scale is applied to the conv output, y = alpha * conv(pad(x), sign(W)): with
+-1 inputs the conv is an exact integer sum, so y equals the deployed kernel's result exactly.
The STE term is divided by alpha so the gradients equal those of conv(x, alpha*sign(W)).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .sign import RSign, hard_sign


def binarize_weight(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return (sign(W) with the STE gradient scaled by 1/alpha, alpha of shape (O,)), both float."""
    alpha = weight.detach().abs().mean(dim=tuple(range(1, weight.dim())))
    sign = hard_sign(weight.detach())
    if torch.is_grad_enabled() and weight.requires_grad:
        clipped = torch.clamp(weight, -1.0, 1.0)  # gradient 1 on |W| <= 1, 0 outside
        scale = alpha.clamp_min(torch.finfo(weight.dtype).tiny).view(-1, *([1] * (weight.dim() - 1)))
        sign = sign + (clipped - clipped.detach()) / scale
    return sign, alpha


class BinaryConv2d(nn.Conv2d):
    """Conv2d on already-signed inputs; `.weight` keeps the same name and shape in both stages.

    `padding` is the logical padding (done with F.pad and `pad_value`); the underlying call
    uses padding 0. Weight init is torch's default Conv2d init. No bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 pad_value: float = 1.0, binary_weights: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        if isinstance(self.padding, str):
            raise ValueError("BinaryConv2d needs an explicit integer padding, not a string mode")
        self.pad_value = float(pad_value)
        self.binary_weights = bool(binary_weights)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw, pw, ph, ph), mode="constant", value=self.pad_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pad(x)
        if not self.binary_weights:
            return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)
        sign, alpha = binarize_weight(self.weight)
        y = F.conv2d(x, sign, None, self.stride, 0, self.dilation, self.groups)
        return y * alpha.view(1, -1, 1, 1)

    def alpha(self) -> torch.Tensor:
        """Per-output-channel scale mean|W_o| used in stage 2, shape (O,)."""
        return self.weight.detach().abs().mean(dim=(1, 2, 3))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad_value={self.pad_value}, binary_weights={self.binary_weights}"


class BinaryConvBN(nn.Module):
    """unit(x) = bn(conv(sign(x + b))): children `.sign` (RSign), `.conv` (BinaryConv2d), `.bn`.

    Packing, export and the profiler find binary convolutions by this class.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, pad_value: float = 1.0, binary_weights: bool = True):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.sign = RSign(in_channels)
        self.conv = BinaryConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                 pad_value=pad_value, binary_weights=binary_weights)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.sign(x)))
