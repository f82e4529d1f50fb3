"""Registry of downstream protocols: name -> run(ctx: EvalContext) -> result dict.

A result has `metric` (name of the main number), `value`, `dataset` and `details`.
"""

from __future__ import annotations

from typing import Callable

from ..registry import Registry

PROTOCOLS: Registry[Callable] = Registry("eval protocol")
