"""The optimiser factory of every trainer: SGD, Adam, AdamW and LARS (large batches, BYOL/SimCLR)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Union

import torch
from torch import nn

from ..config import OPTIMIZERS
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


def trainable_params(modules: Iterable[nn.Module]) -> List[nn.Parameter]:
    """The parameters of `modules` that need a gradient, each once, in module order."""
    out, seen = [], set()
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _split(groups: List[Dict[str, Any]], wd: float, lars: bool) -> List[Dict[str, Any]]:
    """Each group twice: matrices and kernels with decay, then 1-d parameters (biases, BN) without."""
    out = []
    for g in groups:
        params = list(g["params"])
        out.append({**g, "params": [p for p in params if p.ndim > 1], "weight_decay": wd})
        extra = {"lars_exclude": True} if lars else {}
        out.append({**g, "params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **extra})
    return out


def build_optimizer(params: Union[Iterable[nn.Module], List[Dict[str, Any]]], settings: Dict[str, Any], *,
                    section: str = "distill", exclude_1d: bool = True) -> torch.optim.Optimizer:
    """The optimiser `settings['optimizer']` of a config section ([teacher] or [distill]).

    `params`: modules (their trainable parameters form one group) or ready parameter groups (a
    teacher's, e.g. SimSiam's fixed-lr predictor). With `exclude_1d` biases and BN parameters get
    no weight decay (BURN); LARS always excludes them from decay and from the trust ratio.
    Missing keys take the section's defaults.
    """
    from ..config import SECTIONS, defaults

    s = {**defaults(SECTIONS[section]), **settings}
    name = str(s["optimizer"]).lower()
    lr, wd, momentum = float(s["lr"]), float(s["weight_decay"]), float(s["momentum"])
    params = list(params)
    if params and isinstance(params[0], nn.Module):
        groups = [{"params": trainable_params(params)}]
    else:
        groups = [{**g, "params": list(g["params"])} for g in params]
    if name not in OPTIMIZERS:
        raise UserError(f"{section}.optimizer={name!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
    if name == "lars":
        return LARS(_split(groups, wd, lars=True), lr=lr, momentum=momentum, weight_decay=wd,
                    eta=float(s["lars_eta"]))
    if exclude_1d:
        groups = _split(groups, wd, lars=False)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd)
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(groups, lr=lr, weight_decay=wd)
