"""Optimizers, learning-rate schedules and lookahead weight averaging (DESIGN §3).

Every schedule is a per-step multiplier of `optim.lr`: a linear warmup over
`sched.warmup_epochs`, then the named shape over the remaining steps. airbench's
warmup-then-linear-decay is `onecycle` (pct_start 0.23, initial 0.2, final 0.07).

`optim.decoupled` (SGD) takes airbench's units: `lr` and `weight_decay` per 1024
images, so a change of batch size or momentum keeps the step per image and the decay
per image (see `sgd`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from sampler.blocks.registry import Registry, accepted, call_with_accepted, is_int, is_number

from ..errors import ConfigError

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # BatchNorm, InstanceNorm, ...


def _param_groups(model: nn.Module, lr: float, weight_decay: float, decay_norm_and_bias: bool,
                  norm_lr_scale: float, skip: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only, unless asked otherwise: decaying
    norm gains and biases only fights BatchNorm's scale invariance. Norm gains and
    biases train at `norm_lr_scale` times the lr (airbench: 64); frozen weights (a
    whitening conv, frozen norm scales) and those in `skip` (ids) are left out."""
    in_norms = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    weights, norms, biases = [], [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in skip:
            (norms if id(p) in in_norms else weights if p.ndim > 1 else biases).append(p)
    other_decay = weight_decay if decay_norm_and_bias else 0.0
    return [{"params": weights, "lr": lr, "weight_decay": weight_decay},
            {"params": biases, "lr": lr, "weight_decay": other_decay},
            {"params": norms, "lr": lr * norm_lr_scale, "weight_decay": other_decay}]


@OPTIMIZERS.register("sgd", "SGD with momentum / nesterov / weight decay; decoupled: airbench's units")
def sgd(model: nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
        weight_decay: float = 5e-4, decay_norm_and_bias: bool = False, norm_lr_scale: float = 1.0,
        decoupled: bool = False, batch_size: int | None = None) -> torch.optim.Optimizer:
    """With `decoupled`, airbench's parametrisation: `lr` is the step per 1024 images with
    momentum's gain 1 + 1/(1 - momentum) taken out, so the torch lr is
    lr * batch_size / (1024 * (1 + 1/(1 - momentum))) for the mean loss; `weight_decay`
    is the fraction of a weight decayed per 1024 images (times the same gain and the
    schedule), whatever the lr, and norm_lr_scale does not change it."""
    if nesterov and momentum <= 0:
        raise ConfigError("optim.nesterov", "nesterov needs optim.momentum > 0; set optim.nesterov=false")
    if not decoupled:
        return torch.optim.SGD(_param_groups(model, lr, weight_decay, decay_norm_and_bias, norm_lr_scale),
                               lr=lr, momentum=momentum, nesterov=nesterov)
    groups = _decoupled_groups(model, lr, momentum, weight_decay, decay_norm_and_bias, norm_lr_scale, batch_size)
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, nesterov=nesterov)


def _decoupled_groups(model: nn.Module, lr: float, momentum: float, weight_decay: float, decay_norm_and_bias: bool,
                      norm_lr_scale: float, batch_size: int | None, skip: frozenset[int] = frozenset(),
                      key: str = "optim.decoupled") -> list[dict[str, Any]]:
    """`_param_groups` in airbench's units (see `sgd`): torch lr and weight decay per group."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(key, "needs the batch size (trainer.batch_size) to scale the lr")
    step = lr * batch_size / (1024 * (1 + 1 / (1 - momentum)))
    groups = _param_groups(model, step, weight_decay / lr, decay_norm_and_bias, norm_lr_scale, skip)
    for group in groups:  # torch decays by lr * weight_decay per step: keep that product per image
        group["weight_decay"] *= step / group["lr"]
    return groups


# ---------------------------------------------------------------- Muon (optim=muon)

# The quintic Newton-Schulz coefficients of Keller Jordan's Muon (also torch.optim.Muon's
# defaults): they maximise the slope at zero, so 3-5 steps bring every singular value
# of the normalised update into roughly [0.7, 1.2] instead of exactly 1, which trains as well.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: Tensor, steps: int, dtype: str = "bfloat16", eps: float = 1e-7) -> Tensor:
    """About U V^T of g = U S V^T (g: out x in), by `steps` Newton-Schulz iterations in
    `dtype` (a torch dtype's name): the update Muon takes, every direction of the gradient
    scaled alike."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(getattr(torch, dtype))
    x = x / (x.norm() + eps)  # every singular value <= 1
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonSGD(torch.optim.SGD):
    """Muon on the groups marked `muon` (conv filters, each bank seen as out x in*k*k), SGD
    on the rest: one optimizer, so the schedule, lookahead and checkpoints see one.

    A Muon step, as airbench94_muon: momentum (Nesterov optional) on the gradient, the
    filter bank rescaled to norm sqrt(out) (`normalize`; BatchNorm after the conv makes
    its scale irrelevant to the output, so this fixes the step's angle per lr), then
    w -= lr * orthogonalize(update). torch.optim.Muon takes only 2-D parameters, and
    these are 4-D."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        held = []
        for group in self.param_groups:
            if not group.get("muon"):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(g)
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                if group["normalize"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                p.add_(orthogonalize(g.reshape(len(g), -1), group["ns_steps"], group["ns_dtype"]).view_as(p),
                       alpha=-group["lr"])
                held.append((p, p.grad))
                p.grad = None  # SGD's step skips a parameter without a gradient
        try:
            return super().step(closure)
        finally:
            for p, grad in held:
                p.grad = grad


def muon_filters(model: nn.Module) -> list[nn.Parameter]:
    """The trained conv filter banks (4-D weights) Muon updates; the frozen whitening conv
    is not trained, and linear layers, biases and norms stay with SGD."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


@OPTIMIZERS.register("muon", "Muon on conv filters (orthogonalised momentum), SGD in airbench's units on the rest")
def muon(model: nn.Module, lr: float, momentum: float = 0.6, nesterov: bool = True, ns_steps: int = 3,
         normalize: bool = True, sgd_lr: float = 11.5, sgd_momentum: float = 0.85, weight_decay: float = 0.0153,
         decay_norm_and_bias: bool = True, norm_lr_scale: float = 64.0,
         batch_size: int | None = None) -> torch.optim.Optimizer:
    """airbench94_muon's optimizer: `lr` is Muon's step for the filters (torch units: per
    update, whatever the batch), the other parameters train with Nesterov SGD at `sgd_lr`
    and `weight_decay` in airbench's decoupled units (per 1024 images, see `sgd`); the
    filters get no weight decay. The Newton-Schulz steps run in bf16 where the device
    does it natively, else in fp32."""
    from .env import resolve_precision

    if nesterov and momentum <= 0:
        raise ConfigError("optim.nesterov", "nesterov needs optim.momentum > 0; set optim.nesterov=false")
    filters = muon_filters(model)
    if not filters:
        raise ConfigError("optim.name", "muon trains conv filters, and this model has none that train; "
                          "use optim=sgd")
    groups = _decoupled_groups(model, sgd_lr, sgd_momentum, weight_decay, decay_norm_and_bias, norm_lr_scale,
                               batch_size, frozenset(map(id, filters)), "optim.sgd_lr")
    # trainer.precision=auto's choice for this device; a name, as checkpoints load weights_only
    ns_dtype = "bfloat16" if resolve_precision("auto", filters[0].device) == "bf16" else "float32"
    groups.append({"params": filters, "lr": lr, "weight_decay": 0.0, "muon": True, "momentum": momentum,
                   "nesterov": nesterov, "ns_steps": ns_steps, "normalize": normalize, "ns_dtype": ns_dtype})
    return MuonSGD(groups, lr=groups[0]["lr"], momentum=sgd_momentum, nesterov=True)


@OPTIMIZERS.register("adamw", "AdamW (decoupled weight decay)")
def adamw(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.05, decay_norm_and_bias: bool = False,
          norm_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_param_groups(model, lr, weight_decay, decay_norm_and_bias, norm_lr_scale), lr=lr,
                             betas=tuple(betas), eps=eps)


def _is_number(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def check_optimizer(name: str, **kwargs: Any) -> None:
    """`optim.*` as a whole, before any data is read: the name, the lr, no unknown key.
    The batch size comes from trainer.batch_size, never from optim."""
    OPTIMIZERS.get(name, "optim.name")
    OPTIMIZERS.check_args(kwargs, "optim", ignore=("batch_size",))
    lr = kwargs.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError("optim.lr", f"{lr!r} must be a positive number")
    scale = kwargs.get("norm_lr_scale", 1.0)
    if not _is_number(scale) or scale <= 0:
        raise ConfigError("optim.norm_lr_scale", f"{scale!r} must be a positive number (1 = the lr; airbench: 64)")
    decoupled = kwargs.get("decoupled", False)
    if not isinstance(decoupled, bool):
        raise ConfigError("optim.decoupled", f"{decoupled!r} must be true (lr and weight_decay per 1024 images, "
                          "airbench) or false (torch's lr and weight_decay)")
    # torch checks only some of these, and only once the data has loaded; a negative weight
    # decay or a momentum of 1 or more it takes, and the run then diverges as if the lr were to blame.
    for key in ("momentum", "sgd_momentum"):  # sgd's before nesterov's check, which needs momentum > 0
        if key in kwargs and (not _is_number(kwargs[key]) or not 0 <= kwargs[key] < 1):
            raise ConfigError(f"optim.{key}", f"{kwargs[key]!r} must be in [0, 1): the fraction of the last "
                              "step kept in the next (0 = none; sgd 0.9, airbench 0.85)")
    decay = kwargs.get("weight_decay", 0.0)
    if not _is_number(decay) or decay < 0:
        raise ConfigError("optim.weight_decay", f"{decay!r} must be a number >= 0 (0 = no decay); a negative "
                          "decay pushes the weights away from 0")
    if name == "adamw":
        _check_adamw(**kwargs)
    if name == "muon":
        _check_muon(**kwargs)


def _check_adamw(betas: Any = (0.9, 0.999), eps: Any = 1e-8, **_: Any) -> None:
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError("optim.betas", f"{betas!r} must be [beta1, beta2], each in [0, 1) (torch: [0.9, 0.999])")
    if not _is_number(eps) or eps <= 0:
        raise ConfigError("optim.eps", f"{eps!r} must be a number > 0, added to the denominator (torch: 1e-8)")


def _check_muon(sgd_lr: Any = 11.5, ns_steps: Any = 3, normalize: Any = True, **_: Any) -> None:
    if not _is_number(sgd_lr) or sgd_lr <= 0:
        raise ConfigError("optim.sgd_lr", f"{sgd_lr!r} must be a positive number (per 1024 images, airbench 11.5)")
    if not is_int(ns_steps) or not 1 <= ns_steps <= 20:
        raise ConfigError("optim.ns_steps", f"{ns_steps!r} must be a whole number of Newton-Schulz steps in 1..20 "
                          "(airbench 3, torch.optim.Muon 5)")
    if not isinstance(normalize, bool):
        raise ConfigError("optim.normalize", f"{normalize!r} must be true (rescale each filter bank to norm "
                          "sqrt(out_channels) before its step, airbench) or false")


def check_scheduler(name: str, warmup_epochs: Any = 0.0, **kwargs: Any) -> None:
    """`sched.*` as a whole, before any data is read."""
    SCHEDULES.get(name, "sched.name")
    SCHEDULES.check_args(kwargs, "sched")
    if not is_number(warmup_epochs) or warmup_epochs < 0:
        raise ConfigError("sched.warmup_epochs", f"{warmup_epochs!r} must be a number >= 0")
    # Every shape multiplies the peak lr by at most 1; outside these ranges one would exceed
    # the peak, go negative, or (pct_start 1) divide by zero at the last step.
    for key, ok, allowed in (("initial_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
                             ("final_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
                             ("gamma", lambda v: 0 <= v <= 1, "in [0, 1]"),
                             ("pct_start", lambda v: 0 <= v < 1, "in [0, 1), the fraction of the steps spent "
                                                                 "rising to the peak")):
        if key in kwargs and (not _is_number(kwargs[key]) or not ok(kwargs[key])):
            raise ConfigError(f"sched.{key}", f"{kwargs[key]!r} must be {allowed}")
    milestones = kwargs.get("milestones", ())
    if (not isinstance(milestones, (list, tuple))
            or not all(_is_number(m) and 0 <= m <= 1 for m in milestones)):
        raise ConfigError("sched.milestones", f"{milestones!r} must be a list of fractions of training in [0, 1], "
                          "e.g. [0.5, 0.75] (not epochs)")


def build_optimizer(model: nn.Module, name: str, batch_size: int | None = None,
                    **kwargs: Any) -> torch.optim.Optimizer:
    """`optim.*` built for `model`; `batch_size` (trainer.batch_size) scales a decoupled lr."""
    check_optimizer(name, **kwargs)
    return call_with_accepted(OPTIMIZERS.get(name, "optim.name"), {**kwargs, "batch_size": batch_size}, model)


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


# ---------------------------------------------------------------- lookahead (trainer.ema)

class Lookahead:
    """airbench's lookahead (from hlb-cifar10): every `every` steps, and at the end of
    every epoch, an exponential moving average of the weights and BatchNorm statistics
    (torch's `AveragedModel`) moves toward the trained ones, and the trained ones are set
    to it. So every evaluation, and the final model, sees averaged weights.

    `decay` is per step: after k steps the average keeps decay**k of itself, ramped by
    progress**3 (nothing kept early on, decay**k at the end), as airbench does."""

    def __init__(self, model: nn.Module, decay: float, every: int, steps_per_epoch: int, total_steps: int):
        self.model, self.decay, self.every = model, decay, every
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.step = self.synced = 0
        self.kept = 0.0  # the fraction of the average kept by the update under way
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    def attach(self, optimizer: torch.optim.Optimizer) -> "Lookahead":
        optimizer.register_step_post_hook(lambda *_: self.after_step())
        return self

    def after_step(self) -> None:
        self.step += 1
        if self.step % self.every == 0 or self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps:
            self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        self.kept = self.decay ** (self.step - self.synced) * min(1.0, self.step / self.total_steps) ** 3
        self.synced = self.step
        self.averaged.update_parameters(self.model)
        for mine, averaged in zip(self._tensors(self.model), self._tensors(self.averaged.module)):
            mine.copy_(averaged)

    @staticmethod
    def _tensors(model: nn.Module) -> list[Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    def _lerp(self, averaged: list[Tensor], current: list[Tensor], _: Tensor) -> None:
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - self.kept)
        else:  # BatchNorm's batch counters
            for a, c in zip(averaged, current):
                a.copy_(c)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "synced": self.synced, "averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.synced = state["step"], state["synced"]
        self.averaged.load_state_dict(state["averaged"])


def check_lookahead(ema: Any, every: Any) -> None:
    """`trainer.ema` and `trainer.ema_every`, before any data is read."""
    if not _is_number(ema) or not 0 <= ema < 1:
        raise ConfigError("trainer.ema", f"{ema!r} must be a decay per step in [0, 1): 0 = off, airbench 0.95")
    if not is_int(every) or every < 1:
        raise ConfigError("trainer.ema_every", f"{every!r} must be a whole number of steps >= 1 (airbench: 5)")


def build_lookahead(model: nn.Module, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_steps: int,
                    ema: float = 0.0, every: int = 5) -> Lookahead | None:
    """The lookahead `trainer.ema` asks for, attached to `optimizer`; None when it is 0."""
    check_lookahead(ema, every)
    if not ema:
        return None
    return Lookahead(model, ema, every, steps_per_epoch, total_steps).attach(optimizer)
