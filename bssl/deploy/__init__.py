"""Deployment of binary students: one frozen, packed form per student (bssl.deploy.fold) and
packed inference through bssl.kernels (bssl.deploy.packed)."""

from .fold import FoldedStudent, FoldedUnit, fold_student, fold_unit, pack_weight_signs
from .packed import PackedBinaryConvBN, pack, pack_folded, set_threads

__all__ = ["FoldedStudent", "FoldedUnit", "fold_student", "fold_unit", "pack_weight_signs",
           "PackedBinaryConvBN", "pack", "pack_folded", "set_threads"]
