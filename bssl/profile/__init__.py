"""Profiler: BOPs, FLOPs, OPs, binary/FP parameters, FP32 vs deployed bytes, activation peak."""

from .api import profile, resolve_target
from .counter import format_table, packed_weight_bytes, profile_model

__all__ = ["profile", "profile_model", "resolve_target", "format_table", "packed_weight_bytes"]
