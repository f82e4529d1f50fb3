"""Optimisers for distillation: Adam (BURN's default), AdamW, SGD and LARS for large batches."""

from __future__ import annotations

from typing import Any, Dict, Iterable

import torch
from torch import nn

from ..errors import UserError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017), as used by BYOL/SimCLR.

    Parameter groups with `lars_exclude=True` (biases, BN, scalar gains) skip weight decay and the
    trust ratio, as the reference implementations do.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        d = d.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(d)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    d = d.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _split_decay(modules: Iterable[nn.Module]):
    decay, no_decay = [], []
    seen = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(modules: Iterable[nn.Module], dcfg: Dict[str, Any]) -> torch.optim.Optimizer:
    """Optimiser over the trainable parameters of `modules`; 1-d parameters (BN, biases) get no decay."""
    from ..config import DISTILL, defaults

    dcfg = {**defaults(DISTILL), **dcfg}
    name = str(dcfg["optimizer"]).lower()
    lr = float(dcfg["lr"])
    wd = float(dcfg["weight_decay"])
    decay, no_decay = _split_decay(modules)
    if name in ("adam", "adamw"):
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr)
    if name == "sgd":
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.SGD(groups, lr=lr, momentum=float(dcfg["momentum"]))
    if name == "lars":
        groups = [{"params": decay}, {"params": no_decay, "lars_exclude": True, "weight_decay": 0.0}]
        return LARS(groups, lr=lr, momentum=float(dcfg["momentum"]), weight_decay=wd,
                    eta=float(dcfg["lars_eta"]))
    raise UserError(f"distill.optimizer={name!r} is unknown; use adam, adamw, sgd or lars")
