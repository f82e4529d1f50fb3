"""What every trainer shares: the process group and DDP, the global batch over processes and
accumulation steps, mixed precision, the optimiser factory, the lr schedule and resumable state.

`teachers/train.py` (teacher pretraining) and `bssl/distill/trainer.py` (distillation) own the
epoch loop and their checkpoints' layout; their methods only compute a loss.
"""

from . import distributed
from .loop import PRECISIONS, BatchPlan, Stepper, autocast, batch_plan, check_precision, grad_norm, loader_workers, make_loader, memory_format, steps
from .optim import LARS, OPTIMIZERS, build_optimizer, trainable_params
from .schedule import lr_factor, restarted_lr_factor
from .state import all_rng_states, check_world, config_mismatch, restore_rank_rng, rng_state, set_rng_state, train_seconds

__all__ = ["distributed", "PRECISIONS", "BatchPlan", "Stepper", "autocast", "batch_plan", "check_precision",
           "grad_norm", "loader_workers", "make_loader", "memory_format", "steps", "LARS", "OPTIMIZERS", "build_optimizer", "trainable_params",
           "lr_factor", "restarted_lr_factor", "all_rng_states", "check_world", "config_mismatch",
           "restore_rank_rng", "rng_state", "set_rng_state", "train_seconds"]
