"""Measurements of what the course notes claim, beside the ordinary metrics:

- translation invariance: test accuracy under input shifts of 1..k pixels, and the share
  of images whose predicted class survives a random shift (Zhang 2019's consistency);
- BatchNorm's internals: each layer's running statistics against the batch statistics
  of the last training batches, and the validation figures with batch statistics (train
  mode) beside those with running statistics (eval mode): the train/eval gap.

Like the loops, these return numbers and log nothing."""
from __future__ import annotations

import contextlib
from collections import deque
from typing import Callable, ContextManager, Iterable, Iterator

import torch
from torch import Tensor, nn

from .loop import score

Batches = Iterable[tuple[Tensor, Tensor]]


# ---------------------------------------------------------------- translation invariance

def shift_images(x: Tensor, dy: Tensor | int, dx: Tensor | int) -> Tensor:
    """Shift each image of `x` (N, C, H, W) by (dy, dx) pixels, down and right for
    positive values, filling the uncovered border with zeros: in a normalised input that
    is the data set's mean colour. `dy`/`dx` are ints or one value per image."""
    n, _, h, w = x.shape
    k = int(max(torch.as_tensor(dy).abs().max(), torch.as_tensor(dx).abs().max()))
    if k == 0:
        return x
    dy = torch.as_tensor(dy, device=x.device).expand(n)
    dx = torch.as_tensor(dx, device=x.device).expand(n)
    padded = nn.functional.pad(x, (k, k, k, k))
    rows = (torch.arange(h, device=x.device)[None, :] + k - dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + k - dx[:, None])[:, None, None, :]
    images = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[images, channels, rows, cols]
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) else out


def axis_shifts(px: int) -> list[tuple[int, int]]:
    """The four shifts of `px` pixels: along both axes, in both directions."""
    return [(px, 0), (-px, 0), (0, px), (0, -px)]


def random_shifts(n: int, max_px: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One shift per image, uniform over the (2k+1)^2 - 1 offsets of 1..k pixels."""
    side = 2 * max_px + 1
    index = torch.randint(0, side * side - 1, (n,), generator=generator)
    index = index + (index >= side * side // 2).long()  # skip the centre: no shift
    return index // side - max_px, index % side - max_px


@torch.no_grad()
def shift_metrics(model: nn.Module, batches: Batches, amp: Callable[[], ContextManager], max_px: int,
                  seed: int = 0) -> dict[str, float]:
    """`test/shift_acc_<s>px`: accuracy under the four axis shifts of s = 1..max_px pixels
    (their mean); `test/shift_acc_mean`: the mean over s; `test/shift_consistency`: the
    share of images whose predicted class does not change under one random shift of 1 to
    max_px pixels (seeded, the same shifts for every run). No test-time augmentation."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = torch.zeros(max_px + 1, dtype=torch.int64)
    same, seen = 0, 0

    def predict(x: Tensor) -> Tensor:
        with amp():
            return model(x).argmax(1).cpu()

    for x, y in batches:
        y = y.cpu()
        plain = predict(x)
        for px in range(1, max_px + 1):
            for dy, dx in axis_shifts(px):
                correct[px] += int((predict(shift_images(x, dy, dx)) == y).sum())
        dy, dx = random_shifts(len(y), max_px, generator)
        same += int((predict(shift_images(x, dy.to(x.device), dx.to(x.device))) == plain).sum())
        seen += len(y)
    per_px = {f"test/shift_acc_{px}px": int(correct[px]) / (4 * seen) for px in range(1, max_px + 1)}
    return {**per_px, "test/shift_acc_mean": sum(per_px.values()) / max_px, "test/shift_consistency": same / seen}


# ---------------------------------------------------------------- BatchNorm internals

def batch_norms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchStatsProbe:
    """While active, every BatchNorm in training mode keeps the per-channel mean and
    (unbiased) variance of its input over the last `keep` training batches: the batch
    statistics it normalised with, to set against its running statistics. One extra read
    of each BatchNorm input per step, so it is on only with trainer.bn_diagnostics."""

    def __init__(self, model: nn.Module, keep: int = 8):
        self.layers = batch_norms(model)
        self.seen: dict[str, deque[tuple[Tensor, Tensor]]] = {name: deque(maxlen=keep) for name, _ in self.layers}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "BatchStatsProbe":
        for name, bn in self.layers:
            self.handles.append(bn.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            if module.training:
                with torch.no_grad():
                    x = args[0].detach().float()
                    var, mean = torch.var_mean(x, dim=(0, 2, 3))
                    self.seen[name].append((mean, var))  # on the device: no sync per step
        return record

    def layer_stats(self) -> Iterator[tuple[str, nn.Module, Tensor, Tensor]]:
        """(name, module, batch mean, batch variance), averaged over the batches kept."""
        for name, bn in self.layers:
            if self.seen[name] and bn.running_mean is not None:
                means, variances = zip(*self.seen[name])
                yield name, bn, torch.stack(means).mean(0).cpu(), torch.stack(variances).mean(0).cpu()

    def scalars(self) -> dict[str, float]:
        """Per layer: `bn/<layer>/mean_shift`, the mean over channels of |batch mean −
        running mean| in running standard deviations, and `bn/<layer>/var_ratio`, the mean
        ratio of batch to running variance (1 when the running statistics match)."""
        out: dict[str, float] = {}
        for name, bn, mean, var in self.layer_stats():
            std = (bn.running_var.float().cpu() + bn.eps).sqrt()
            out[f"bn/{name}/mean_shift"] = float(((mean - bn.running_mean.float().cpu()).abs() / std).mean())
            out[f"bn/{name}/var_ratio"] = float((var / (bn.running_var.float().cpu() + bn.eps)).mean())
        return out

    def histograms(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, bn, mean, var in self.layer_stats():
            # Named so that TensorBoard, sorting tags, shows each running statistic beside the batch's.
            out.update({f"bn/{name}/mean_running": bn.running_mean.float().cpu(), f"bn/{name}/mean_batch": mean,
                        f"bn/{name}/var_running": bn.running_var.float().cpu(), f"bn/{name}/var_batch": var})
        return out


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm in training mode (normalising with each batch's own statistics),
    everything else in eval mode; the running statistics are put back afterwards, so
    the model is exactly as before."""
    layers = batch_norms(model)
    saved = [{k: v.clone() for k, v in bn.named_buffers()} for _, bn in layers]
    model.eval()
    for _, bn in layers:
        bn.train()
    try:
        yield
    finally:
        for (_, bn), buffers in zip(layers, saved):
            for k, v in buffers.items():
                getattr(bn, k).copy_(v)
        model.eval()


def bn_mode_gap(model: nn.Module, batches: Batches, loss_fn: nn.Module, amp: Callable[[], ContextManager],
                batch_size: int, split: str) -> dict[str, float]:
    """The same images, in batches of the training batch size, scored with BatchNorm in
    eval mode (running statistics) and in train mode (each batch's own statistics, what
    training normalised with): `bn/<split>_{acc,loss}_{eval,train}_mode` and
    `bn/<split>_gap_acc`, eval minus train mode. No test-time augmentation."""
    model.eval()
    eval_mode = score(model, rebatch(batches, batch_size), loss_fn, amp)
    with batch_statistics(model):
        train_mode = score(model, rebatch(batches, batch_size), loss_fn, amp)
    out = {f"bn/{split}_{k}_{mode}": v for mode, scores in (("eval_mode", eval_mode), ("train_mode", train_mode))
           for k, v in scores.items()}
    return {**out, f"bn/{split}_gap_acc": eval_mode["acc"] - train_mode["acc"]}


def rebatch(batches: Batches, size: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """The images of `batches` reshuffled (a fixed permutation: evaluation splits are
    stored class by class, and a batch of one class has other statistics) into batches of
    `size`, the training batch size, so that batch statistics are taken as in training;
    a short rest is left out."""
    xs, ys = zip(*batches)
    x, y = torch.cat(xs), torch.cat(ys)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(y.device)
    for index in order.split(size):
        if len(index) == size:
            yield x[index], y[index]
