"""`sampler bench`: sampler's in-memory pipeline against the standard tutorial one.

Both train the same stack from the same initial weights, with the same optimizer,
schedule, batch size, epochs and augmentation (random crop with 4 px padding,
horizontal flip); only the data path, the memory format and (on request) the
precision differ:

- tutorial: torchvision ImageFolder over the JPEG tree, per-image PIL
  transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), a
  DataLoader with worker processes, fp32, NCHW;
- sampler: the decoded uint8 tensors in memory, whole-batch crop/flip,
  channels_last, fp32 or `--precision bf16` (which pays only on CPUs with
  AVX-512 BF16 or AMX).

Throughput counts every training step including its data loading; evaluation
is outside the timed part and identical for both (sampler's tensor evaluator).
The table also gives the arithmetic rate the throughput stands for (3x the
forward FLOPs per image: the backward costs about twice the forward), to hold
against the CPU's peak: a speedup the arithmetic cannot reach is not a
pipeline problem.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from sampler.blocks import build_model

from ..data import TensorLoader
from ..data.cifar10 import CIFAR10_CLASSES, load_cifar10
from ..data.splits import balanced_indices
from ..train.cost import count_flops
from ..train.env import resolve_precision, seed_everything, setup_threads
from ..errors import ConfigError
from ..train.loop import autocast, evaluate, train_epoch
from ..train.optim import build_optimizer, build_scheduler

LR_PER_64 = 0.05       # peak lr of the one-cycle schedule per 64 images of batch (linear scaling)
TUTORIAL_WORKERS = 2   # DataLoader worker processes, as in the PyTorch CIFAR-10 tutorial


def tutorial_batches(folder: Path, indices: Sequence[int], mean: Sequence[float], std: Sequence[float],
                     seed: int, batch_size: int) -> Iterable[Any]:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    if tuple(dataset.classes) != CIFAR10_CLASSES:
        raise ConfigError("--data-root", f"{folder} does not hold the CIFAR-10 class folders")
    return DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=True, drop_last=True,
                      num_workers=TUTORIAL_WORKERS, persistent_workers=True,
                      generator=torch.Generator().manual_seed(seed))


def _train(name: str, model: nn.Module, batches: Iterable[Any], steps_per_epoch: int, epochs: int, lr: float,
           precision: str, evaluate_on: TensorLoader, console: Console) -> dict[str, Any]:
    optimizer = build_optimizer(model, "sgd", lr=lr)
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, steps_per_epoch, "onecycle")
    loss_fn, amp = nn.CrossEntropyLoss(), autocast(torch.device("cpu"), precision)
    images, seconds, epoch_s = 0, 0.0, []
    for epoch in range(epochs):
        r = train_epoch(model, batches, optimizer, scheduler, loss_fn, amp)
        images, seconds = images + r["images"], seconds + r["seconds"]
        epoch_s.append(r["seconds"])
        console.print(f"  {name}: epoch {epoch + 1}/{epochs} {r['images'] / r['seconds']:.0f} img/s "
                      f"loss {r['loss']:.3f}")
    test = evaluate(model, evaluate_on, loss_fn, amp)
    return {"images_per_s": images / seconds, "test/acc": test["acc"], "seconds": seconds,
            "epoch_max_over_first": max(epoch_s) / epoch_s[0], "precision": precision}


def run_bench(epochs: int, subset: int | None, data_root: str | None, widths: Sequence[int], seed: int,
              skip_tutorial: bool = False, batch_size: int = 64, order: Sequence[str] = ("conv", "norm", "act", "pool"),
              precision: str = "fp32") -> dict[str, dict[str, Any]]:
    root = Path(data_root or os.environ.get("SAMPLER_DATA") or "data").expanduser()
    console = Console(highlight=False)
    if not console.is_terminal:  # piped into a file: no reason to squeeze the table into 80 columns
        console.width = max(console.width, 120)
    if batch_size < 1:
        raise ConfigError("--batch-size", f"{batch_size} must be a positive integer")
    device = torch.device("cpu")
    seed_everything(seed)
    try:  # both checked before any data loads, and named by their flags
        precision = resolve_precision(precision, device)
        initial = build_model(widths=list(widths), order=list(order))
    except ConfigError as e:
        raise ConfigError(f"--{e.key.split('.')[-1]}", e.message) from None
    train_flops = 3 * count_flops(initial, torch.zeros(1, 3, 32, 32))
    lr = LR_PER_64 * batch_size / 64
    threads = setup_threads(None)
    data = load_cifar10(str(root), subset=None, val_size=0)
    train_idx = torch.arange(len(data.train))
    if subset is not None:
        train_idx, _ = balanced_indices(data.train.labels, subset // 10, torch.Generator().manual_seed(seed))
    test = TensorLoader(data.test, 500, data.mean, data.std, device, channels_last=True)
    console.print(f"bench: widths {list(widths)}, order {list(order)}, {len(train_idx)} training images, "
                  f"{epochs} epochs, batch {batch_size}, lr {lr:g}, {threads} threads, seed {seed}; "
                  f"{train_flops / 1e6:.1f} MFLOPs per training image")
    results: dict[str, dict[str, Any]] = {}

    seed_everything(seed)
    ours = TensorLoader(data.train.take(train_idx), batch_size, data.mean, data.std, device, shuffle=True,
                        crop_padding=4, flip=True, drop_last=True, channels_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model = copy.deepcopy(initial).to(memory_format=torch.channels_last)
    results["sampler"] = _train("sampler", model, ours, len(ours), epochs, lr, precision, test, console)

    if not skip_tutorial:
        folder = root / "cifar10" / "train"
        if not folder.is_dir():
            raise ConfigError("--data-root", f"the tutorial pipeline needs the JPEG tree {folder}; point "
                              "--data-root at a folder holding cifar10/train/<class>/")
        seed_everything(seed)
        batches = tutorial_batches(folder, train_idx.tolist(), data.mean, data.std, seed, batch_size)
        test_nchw = TensorLoader(data.test, 500, data.mean, data.std, device)
        results["tutorial"] = _train("tutorial", copy.deepcopy(initial), batches, len(batches), epochs, lr,
                                     "fp32", test_nchw, console)
    for r in results.values():
        r["gflop_per_s"] = r["images_per_s"] * train_flops / 1e9
    _print(results, console)
    return results


def _print(results: dict[str, dict[str, Any]], console: Console) -> None:
    table = Table(title="training throughput (data loading included)")
    for col in ("pipeline", "precision", "img/s", "GFLOP/s", "train s", "test acc", "max/first epoch", "speedup"):
        table.add_column(col, justify="left" if col in ("pipeline", "precision") else "right")
    base = results.get("tutorial", {}).get("images_per_s")
    for name, r in results.items():
        table.add_row(name, r["precision"], f"{r['images_per_s']:.0f}", f"{r['gflop_per_s']:.1f}", f"{r['seconds']:.1f}",
                      f"{100 * r['test/acc']:.2f}%", f"{r['epoch_max_over_first']:.2f}",
                      f"{r['images_per_s'] / base:.2f}x" if base else "")
    console.print(table)
    console.print("GFLOP/s: the model arithmetic the throughput stands for (3x the forward FLOPs per image); "
                  "compare it with the CPU's fp32 peak (cores x FMA units x vector lanes x 2 x clock).")
