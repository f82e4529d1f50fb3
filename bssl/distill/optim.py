"""The distillation trainer's optimisers are bssl.train's (Adam by default, as BURN)."""

from bssl.train.optim import LARS, build_optimizer  # noqa: F401
