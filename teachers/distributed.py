"""The teacher methods' name for bssl.train.distributed (process group, gathers, CPU SyncBatchNorm)."""

from bssl.train.distributed import (  # noqa: F401
    SyncBatchNorm, all_reduce_sum, convert_sync_batchnorm, gather, init_from_env, is_distributed, is_main, rank,
    world_size,
)
