"""The train and eval loops: they return numbers and log nothing."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sampler.blocks.registry import Registry

from ..errors import ConfigError, Diverged

StepHook = Callable[[int, Tensor, Tensor], None]  # (images so far, loss sum, correct sum)
BatchHook = Callable[[Tensor, Tensor], None]  # (predicted labels, targets) of one evaluation batch


def autocast(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# A run diverges when its loss is not finite, or when an epoch's mean training loss is
# more than this many times the loss of the run's first step: a stable run's loss
# falls below its start within an epoch, one blown up by a too-high lr stays far above.
DIVERGENCE_FACTOR = 10.0


@dataclass
class EpochState:
    """One epoch's progress: steps done and running sums, so that a run stopped at a
    step boundary can be checkpointed and resumed exactly (DESIGN §8)."""

    step: int = 0
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    counted: int = 0
    seconds: float = 0.0


class StopAtStep(Exception):
    """Raised at a step boundary when the run was asked to stop; carries the epoch so far."""

    def __init__(self, state: EpochState):
        super().__init__(f"stopped after step {state.step}")
        self.state = state


def train_epoch(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module,
                amp: Callable[[], ContextManager], on_step: StepHook | None = None,
                check_every: int = 25, state: EpochState | None = None,
                should_stop: Callable[[], bool] | None = None, first_loss: list[float] | None = None,
                peak_lr: float | None = None) -> dict[str, float]:
    """One pass over `batches`; raises `Diverged` as soon as the loss is not finite.
    Accuracy counts every target the loss does not ignore: labels, or pixels of a mask.
    `peak_lr` (optim.lr) puts the lr a divergence message names in its units (`_step_lr`).

    `state` resumes an epoch stopped after `state.step` steps: those batches are drawn
    again (so the data generator advances exactly as before) but not trained on.
    `should_stop` is asked after every step; when it says yes, `StopAtStep` carries the
    epoch so far. `first_loss` holds the run's first step loss (filled when empty)."""
    model.train()
    state = state or EpochState()
    start = time.perf_counter() - state.seconds
    device = next(model.parameters()).device
    ignore = getattr(loss_fn, "ignore_index", -100)
    # Sums stay on the device so that a GPU step never waits for a host copy.
    loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
    correct = torch.tensor(state.correct, dtype=torch.int64, device=device)
    counted = torch.tensor(state.counted, dtype=torch.int64, device=device)
    seen = state.seen
    first_group = optimizer.param_groups[0]
    peak = f"the schedule's peak, optim.lr, is {peak_lr if peak_lr is not None else first_group['initial_lr']:.3g}"
    top_lr = 0.0  # the highest lr a step of this epoch took, for a divergence found at its end
    for step, (x, y) in enumerate(batches):
        if step < state.step:
            continue
        lr = _step_lr(optimizer, peak_lr)  # before scheduler.step() moves it on to the next step's
        top_lr = max(top_lr, lr)
        with amp():
            out = model(x)
            loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().double() * len(y)
        valid = y != ignore
        correct += ((out.argmax(1) == y) & valid).sum()
        counted += valid.sum()
        seen += len(y)
        if first_loss is not None and not first_loss:
            first_loss.append(float(loss.detach()))
        if step % check_every == 0 and not math.isfinite(loss_value := float(loss.detach())):
            raise Diverged("optim.lr", f"the training loss became {loss_value} at step {step}, which took lr "
                           f"{lr:.3g} ({peak}); lower optim.lr")
        if on_step is not None:  # the hook divides by images: hand it correct targets per image
            on_step(seen, loss_sum, correct * seen / counted.clamp(min=1))
        if should_stop is not None and should_stop():
            raise StopAtStep(EpochState(step + 1, seen, float(loss_sum), int(correct), int(counted),
                                        time.perf_counter() - start))
    loss_mean = float(loss_sum) / max(seen, 1)
    lrs = f"this epoch's steps took lr up to {top_lr:.3g} ({peak})"
    if not math.isfinite(loss_mean):
        raise Diverged("optim.lr", f"the training loss became {loss_mean}; {lrs}; lower optim.lr")
    if first_loss and loss_mean > DIVERGENCE_FACTOR * first_loss[0]:
        raise Diverged("optim.lr", f"the epoch's mean training loss {loss_mean:.3g} is more than "
                       f"{DIVERGENCE_FACTOR:g}x the first step's {first_loss[0]:.3g}: the run blew up; {lrs}; "
                       "lower optim.lr")
    return {"loss": loss_mean, "acc": float(correct) / max(int(counted), 1), "images": seen,
            "seconds": time.perf_counter() - start}


def _step_lr(optimizer: torch.optim.Optimizer, peak_lr: float | None) -> float:
    """The lr the next step takes: the schedule's share of its peak (the first group's lr
    over its `initial_lr`, which every schedule sets) times `peak_lr`, so in optim.lr's
    units whatever the optimizer makes of it (decoupled SGD, Muon's groups); without
    `peak_lr`, the first group's torch lr."""
    group = optimizer.param_groups[0]
    return group["lr"] if peak_lr is None else peak_lr * group["lr"] / group["initial_lr"]


# Test-time augmentation (`trainer.tta`): each entry maps (model, images) to the logits
# averaged over its views; dense outputs are moved back to the original image's pixels.
TTA: Registry = Registry("test-time augmentation")


@TTA.register("false", "one view: the image as it is")
def no_tta(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


@TTA.register("flip", "two views: the mean of the image's and its mirror image's logits (airbench level 1)")
def flip_tta(model: nn.Module, x: Tensor) -> Tensor:
    mirrored = model(x.flip(3))
    return (model(x) + (mirrored.flip(3) if mirrored.ndim == 4 else mirrored)) / 2


TTA.register("true", "the same as flip")(flip_tta)


@TTA.register("flip_translate", "six views: flip, and flip of the image moved 1 px down-right and 1 px "
                                "up-left (reflect padding), weighted 1/2, 1/4, 1/4 (airbench level 2)")
def flip_translate_tta(model: nn.Module, x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    down, up = flip_tta(model, padded[..., :h, :w]), flip_tta(model, padded[..., 2:, 2:])
    if down.ndim == 4:  # per-pixel logits: put each view's pixels back where the image has them
        down = F.pad(down[..., 1:, 1:], (0, 1, 0, 1), mode="replicate")
        up = F.pad(up[..., :-1, :-1], (1, 0, 1, 0), mode="replicate")
    return flip_tta(model, x) / 2 + (down + up) / 4


def tta_mode(tta: Any) -> str:
    """`trainer.tta` as its registered name (false, true, flip, flip_translate), checked."""
    name = str(tta).lower() if isinstance(tta, bool) else tta
    if not isinstance(name, str) or name not in TTA:
        raise ConfigError("trainer.tta", f"{tta!r}; choose one of: {', '.join(TTA.names())}")
    return name


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: nn.Module,
             amp: Callable[[], ContextManager], tta: bool | str = False,
             on_batch: BatchHook | None = None) -> dict[str, float]:
    """`score` in eval mode: mean loss and accuracy over the targets the loss does not
    ignore; `tta` names the views whose logits are averaged (`TTA`; true = flip).
    `on_batch` sees every batch's predicted labels and targets, for task-specific metrics."""
    model.eval()
    return score(model, batches, loss_fn, amp, TTA.get(tta_mode(tta), "trainer.tta"), on_batch)


@torch.no_grad()
def score(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: nn.Module,
          amp: Callable[[], ContextManager], views: Callable[[nn.Module, Tensor], Tensor] | None = None,
          on_batch: BatchHook | None = None) -> dict[str, float]:
    """Mean loss and accuracy over the targets the loss does not ignore, in whatever mode
    the model is in (BatchNorm's train mode is a probe of its own); `views` maps the
    model and a batch to logits (a TTA; None = one plain forward)."""
    ignore = getattr(loss_fn, "ignore_index", -100)
    loss_sum, correct, counted, seen = 0.0, 0, 0, 0
    for x, y in batches:
        with amp():
            out = model(x) if views is None else views(model, x)
        out = out.float()
        loss_sum += float(loss_fn(out, y)) * len(y)
        pred = out.argmax(1)
        valid = y != ignore
        correct += int(((pred == y) & valid).sum())
        counted += int(valid.sum())
        seen += len(y)
        if on_batch is not None:
            on_batch(pred, y)
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(counted, 1)}
