"""Optimizers and learning-rate schedules, by registry name (DESIGN §3).

Every schedule is a per-step multiplier of `optim.lr`: a linear warmup over
`sched.warmup_epochs`, then the named shape over the remaining steps.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from sampler.blocks.registry import Registry, accepted, call_with_accepted

from ..errors import ConfigError

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


def _param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only, unless asked otherwise: decaying
    norm gains and biases only fights BatchNorm's scale invariance."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 or decay_norm_and_bias else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("sgd", "SGD with momentum / nesterov / weight decay")
def sgd(model: nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
        weight_decay: float = 5e-4, decay_norm_and_bias: bool = False) -> torch.optim.Optimizer:
    if nesterov and momentum <= 0:
        raise ConfigError("optim.nesterov", "nesterov needs optim.momentum > 0; set optim.nesterov=false")
    return torch.optim.SGD(_param_groups(model, weight_decay, decay_norm_and_bias), lr=lr,
                           momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("adamw", "AdamW (decoupled weight decay)")
def adamw(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.05, decay_norm_and_bias: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_param_groups(model, weight_decay, decay_norm_and_bias), lr=lr,
                             betas=tuple(betas), eps=eps)


def check_optimizer(name: str, **kwargs: Any) -> None:
    """`optim.*` as a whole, before any data is read: the name, the lr, no unknown key."""
    OPTIMIZERS.get(name, "optim.name")
    OPTIMIZERS.check_args(kwargs, "optim")
    lr = kwargs.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ConfigError("optim.lr", f"{lr!r} must be a positive number")


def check_scheduler(name: str, warmup_epochs: Any = 0.0, **kwargs: Any) -> None:
    """`sched.*` as a whole, before any data is read."""
    SCHEDULES.get(name, "sched.name")
    SCHEDULES.check_args(kwargs, "sched")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
        raise ConfigError("sched.warmup_epochs", f"{warmup_epochs!r} must be a number >= 0")


def build_optimizer(model: nn.Module, name: str, **kwargs: Any) -> torch.optim.Optimizer:
    check_optimizer(name, **kwargs)
    return call_with_accepted(OPTIMIZERS.get(name, "optim.name"), kwargs, model)


# A schedule maps progress t in [0, 1] (after warmup) to a multiplier of the peak lr.
@SCHEDULES.register("constant", "the peak lr throughout")
def constant(t: float) -> float:
    return 1.0


@SCHEDULES.register("cosine", "cosine decay to final_lr_ratio")
def cosine(t: float, final_lr_ratio: float = 0.0) -> float:
    return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


@SCHEDULES.register("onecycle", "linear rise over pct_start, then linear fall to final_lr_ratio")
def onecycle(t: float, pct_start: float = 0.25, initial_lr_ratio: float = 0.1,
             final_lr_ratio: float = 0.0) -> float:
    if t < pct_start:
        return initial_lr_ratio + (1 - initial_lr_ratio) * t / pct_start
    return final_lr_ratio + (1 - final_lr_ratio) * (1 - t) / (1 - pct_start)


@SCHEDULES.register("step", "multiply by gamma at each of the milestones (fractions of training)")
def step(t: float, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> float:
    return gamma ** sum(t >= m for m in milestones)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int,
                    name: str, warmup_epochs: float = 0.0, **kwargs: Any) -> torch.optim.lr_scheduler.LambdaLR:
    check_scheduler(name, warmup_epochs, **kwargs)
    shape: Callable[..., float] = SCHEDULES.get(name, "sched.name")
    warmup = min(int(warmup_epochs * steps_per_epoch), total_steps)
    shape_args = accepted(shape, kwargs)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return shape(min(t, 1.0), **shape_args)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
