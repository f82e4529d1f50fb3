"""Binarizers and binary layers: ApproxSign, RSign, RPReLU, BinaryConv2d, BinaryConvBN, set_stage.

Parameter names other parts rely on (identical in stage 1 and stage 2):
  BinaryConvBN:  sign.bias (C_in,)  conv.weight (O, I, kh, kw)  bn.{weight,bias,running_mean,running_var}
  BinaryConv2d:  .padding (logical, applied with F.pad and .pad_value), .stride, .binary_weights
  RPReLU:        bias_in (C,)  prelu.weight (C,)  bias_out (C,)   y = prelu(x + bias_in) + bias_out
sign(x) is -1 for x < 0 and +1 otherwise; its gradient is ApproxSign's (approx_sign_grad).
"""

from .activation import RPReLU
from .conv import BinaryConv2d, BinaryConvBN, binarize_weight
from .sign import RSign, approx_sign, approx_sign_grad, hard_sign
from .stage import get_stage, set_stage

__all__ = [
    "RPReLU", "RSign", "BinaryConv2d", "BinaryConvBN", "binarize_weight",
    "approx_sign", "approx_sign_grad", "hard_sign", "set_stage", "get_stage",
]
