"""The train and eval loops: they return numbers and log nothing."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, ContextManager, Iterable

import torch
from torch import Tensor, nn

from .errors import Diverged

StepHook = Callable[[int, Tensor, Tensor], None]  # (images so far, loss sum, correct sum)


def autocast(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def train_epoch(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module,
                amp: Callable[[], ContextManager], on_step: StepHook | None = None,
                check_every: int = 25) -> dict[str, float]:
    """One pass over `batches`; raises `Diverged` as soon as the loss is not finite."""
    model.train()
    start = time.perf_counter()
    device = next(model.parameters()).device
    # Sums stay on the device so that a GPU step never waits for a host copy.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for step, (x, y) in enumerate(batches):
        with amp():
            out = model(x)
            loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        if step % check_every == 0 and not math.isfinite(loss_value := float(loss.detach())):
            raise Diverged("optim.lr", f"the training loss became {loss_value} at step {step} "
                           f"(lr {optimizer.param_groups[0]['lr']:.3g})")
        if on_step is not None:
            on_step(seen, loss_sum, correct)
    loss_mean = float(loss_sum) / max(seen, 1)
    if not math.isfinite(loss_mean):
        raise Diverged("optim.lr", f"the training loss became {loss_mean} "
                       f"(lr {optimizer.param_groups[0]['lr']:.3g})")
    return {"loss": loss_mean, "acc": float(correct) / max(seen, 1), "images": seen,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: nn.Module,
             amp: Callable[[], ContextManager], tta: bool = False) -> dict[str, float]:
    """Mean loss and accuracy; with `tta`, logits are averaged with the mirrored image's."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        with amp():
            out = model(x)
            if tta:
                out = (out + model(x.flip(3))) / 2
        out = out.float()
        loss_sum += float(loss_fn(out, y)) * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}
