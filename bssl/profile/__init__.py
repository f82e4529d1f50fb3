"""Profiler: BOPs, FLOPs, OPs, binary/FP parameters, FP32 vs deployed bytes, activation peak."""

from .counter import format_table, packed_weight_bytes, profile_model

__all__ = ["profile_model", "format_table", "packed_weight_bytes"]
