"""The train and eval loops: they return numbers and log nothing."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, ContextManager, Iterable

import torch
from torch import Tensor, nn

from ..errors import Diverged

StepHook = Callable[[int, Tensor, Tensor], None]  # (images so far, loss sum, correct sum)
BatchHook = Callable[[Tensor, Tensor], None]  # (predicted labels, targets) of one evaluation batch


def autocast(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def train_epoch(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: nn.Module,
                amp: Callable[[], ContextManager], on_step: StepHook | None = None,
                check_every: int = 25) -> dict[str, float]:
    """One pass over `batches`; raises `Diverged` as soon as the loss is not finite.
    Accuracy counts every target the loss does not ignore: labels, or pixels of a mask."""
    model.train()
    start = time.perf_counter()
    device = next(model.parameters()).device
    ignore = getattr(loss_fn, "ignore_index", -100)
    # Sums stay on the device so that a GPU step never waits for a host copy.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    counted = torch.zeros((), dtype=torch.int64, device=device)
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
        valid = y != ignore
        correct += ((out.argmax(1) == y) & valid).sum()
        counted += valid.sum()
        seen += len(y)
        if step % check_every == 0 and not math.isfinite(loss_value := float(loss.detach())):
            raise Diverged("optim.lr", f"the training loss became {loss_value} at step {step} "
                           f"(lr {optimizer.param_groups[0]['lr']:.3g})")
        if on_step is not None:  # the hook divides by images: hand it correct targets per image
            on_step(seen, loss_sum, correct * seen / counted.clamp(min=1))
    loss_mean = float(loss_sum) / max(seen, 1)
    if not math.isfinite(loss_mean):
        raise Diverged("optim.lr", f"the training loss became {loss_mean} "
                       f"(lr {optimizer.param_groups[0]['lr']:.3g})")
    return {"loss": loss_mean, "acc": float(correct) / max(int(counted), 1), "images": seen,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: nn.Module,
             amp: Callable[[], ContextManager], tta: bool = False,
             on_batch: BatchHook | None = None) -> dict[str, float]:
    """Mean loss and accuracy over the targets the loss does not ignore; with `tta`,
    logits are averaged with the mirrored image's (mirrored back for dense outputs).
    `on_batch` sees every batch's predicted labels and targets, for task-specific metrics."""
    model.eval()
    ignore = getattr(loss_fn, "ignore_index", -100)
    loss_sum, correct, counted, seen = 0.0, 0, 0, 0
    for x, y in batches:
        with amp():
            out = model(x)
            if tta:
                mirrored = model(x.flip(3))
                out = (out + (mirrored.flip(3) if mirrored.ndim == 4 else mirrored)) / 2
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
