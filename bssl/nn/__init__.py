"""Binarizers and binary layers: ApproxSign, RSign, RPReLU, BinaryConv2d, BinaryConvBN, set_stage."""

from .activation import RPReLU
from .conv import BinaryConv2d, BinaryConvBN, binarize_weight
from .sign import RSign, approx_sign, approx_sign_grad, hard_sign
from .stage import get_stage, set_stage

__all__ = [
    "RPReLU", "RSign", "BinaryConv2d", "BinaryConvBN", "binarize_weight",
    "approx_sign", "approx_sign_grad", "hard_sign", "set_stage", "get_stage",
]
