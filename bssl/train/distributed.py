"""Data-parallel helpers: process-group setup under torchrun, gradient-preserving collectives and a
synchronised BatchNorm that also runs on CPU (torch's SyncBatchNorm is GPU-only; gloo runs CPU)."""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def env_world_size() -> int:
    """The world size torchrun announces, readable before the process group exists."""
    return world_size() if is_distributed() else max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def env_rank() -> int:
    return rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def free_port() -> int:
    """A TCP port on localhost nobody listens on, for a rendezvous started from this process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> List[Any]:
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


T = TypeVar("T")


def agree(fn: Callable[[], T]) -> T:
    """Run the checks `fn` on every rank and fail on every rank when any rank fails.

    A rank that raised alone would leave the others blocked in their next collective; here every
    rank raises the first failing rank's UserError, so rank 0 can print it and all exit 2.
    """
    from bssl.errors import UserError

    error: Optional[str] = None
    result = None
    try:
        result = fn()
    except UserError as exc:
        error = str(exc)
    if not is_distributed():
        if error is not None:
            raise UserError(error)
        return result
    errors = [e for e in all_gather_object(error) if e is not None]
    if errors:
        raise UserError(errors[0])
    return result


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the summed gradient, so backward all-reduces too."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward returns this rank's slice of the
    gradient summed over ranks (each rank's loss depends on every rank's rows)."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.n
        return grad[start:start + ctx.n]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x) if is_distributed() else x


def gather(x: torch.Tensor) -> torch.Tensor:
    """Global batch (rank order) with gradients flowing back to every rank's rows.

    Assumes equal local batch sizes (the training loader drops the last uneven batch)."""
    if not is_distributed():
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x)
    out: List[torch.Tensor] = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class _SyncBatchNormFn(torch.autograd.Function):
    """Global-batch BatchNorm in one all-reduce forward and one backward, each a few fused passes.

    Forward normalises with the mean and variance of every rank's batch; backward all-reduces the
    per-channel sums of dy and dy * x, as torch's CUDA SyncBatchNorm does, so every rank's input
    gradient is that of the concatenated batch (the statistics' share included)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([float(x.numel() // c)])])
        dist.all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        ctx.save_for_backward(x, weight, mean, invstd, n)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var, n)
        return torch.addcmul(shift.view(shape), x, scale.view(shape)), mean, var, n

    @staticmethod
    def backward(ctx, dy, _grad_mean, _grad_var, _grad_n):
        x, weight, mean, invstd, n = ctx.saved_tensors
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        local = torch.cat([dy.sum(dims), (dy * x).sum(dims)])
        grad_weight = (local[c:] - mean * local[:c]) * invstd if weight is not None else None
        grad_bias = local[:c].clone() if ctx.has_bias else None
        dist.all_reduce(local)
        sum_dy, sum_dy_x = local[:c], local[c:]
        sum_dy_xhat = (sum_dy_x - mean * sum_dy) * invstd
        w = invstd if weight is None else weight * invstd
        k = w * invstd * sum_dy_xhat / n
        # w * (dy - sum_dy / n - xhat * sum_dy_xhat / n) with xhat = (x - mean) * invstd, in two passes
        dx = torch.addcmul((k * mean - w * sum_dy / n).view(shape), dy, w.view(shape)) - x * k.view(shape)
        return dx, grad_weight, grad_bias, None


class SyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the global batch of all ranks, for 1d (N, C) and 2d (N, C, H, W) inputs.

    The result and its gradients equal a single-process BatchNorm on the concatenated batch
    (tests/test_train_ddp.py). Outside a process group it is plain BN.
    """

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"SyncBatchNorm expects 2d or 4d input, got {x.dim()}d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        if x.dtype in (torch.float16, torch.bfloat16):
            # as autocast runs BatchNorm: E[x^2] - E[x]^2 in bf16 loses all precision (and goes negative)
            x = x.float()
        weight = self.weight.to(x.dtype) if self.affine else None
        bias = self.bias.to(x.dtype) if self.affine else None
        y, mean, var, n = _SyncBatchNormFn.apply(x, weight, bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                n = float(n)
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / max(n - 1, 1), alpha=m)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA (nccl); the CPU-capable one above for gloo."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        # the same Parameter and buffer objects: optimisers and id-based bookkeeping stay valid
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def run_command(body: Callable[[], int]) -> int:
    """A CLI command's body on every rank of a torchrun job.

    A UserError reaches the CLI (one line on stderr, exit 2) from rank 0 only; the other ranks
    exit with the same code silently, as each raised it too (see agree). The process group is
    left at the end."""
    from bssl.errors import UserError

    try:
        return body()
    except UserError as exc:
        if env_rank() != 0:
            return exc.exit_code
        raise
    finally:
        shutdown()
