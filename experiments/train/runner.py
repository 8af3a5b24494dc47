"""One training run, wired from a plain config dict. Reads as a table of contents:
set up, build and check the model, load the data, train, test, record. What differs
between classification and segmentation (batches, loss, metrics, pictures) is asked
of the task (train/tasks.py)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from sampler.blocks.registry import call_with_accepted

from ..data import DATASETS, DataSpec, TensorLoader, cache_root
from ..errors import ConfigError, Diverged
from ..runs.atomic import save_torch
from ..runs.record import RunRecord
from .choices import domains
from .cost import activation_memory, count_cost
from .env import (peak_memory_mb, reset_peak_memory, resolve_device, resolve_precision, seconds_since_process_start,
                  seed_everything, setup_threads)
from .loop import autocast, train_epoch
from .model import example_input, make_model
from .optim import build_optimizer, build_scheduler
from .progress import EpochProgress
from .tasks import TASKS, Classification, hparam_metrics

log = logging.getLogger("sampler")


def train(cfg: dict[str, Any], run_dir: Path, overrides: list[str], parallel_jobs: int = 1) -> dict[str, Any]:
    """Train and evaluate one configuration; everything lands in `run_dir`."""
    record = RunRecord(run_dir, cfg, overrides, domains(), hparam_metrics(cfg["task"]["name"]))
    try:
        run = _set_up(cfg, record, parallel_jobs, _StartupClock())
        _fit(run)
        _test(run)
    except KeyboardInterrupt:
        record.finish("interrupted", "interrupted by the user (Ctrl-C)")
        raise
    except Diverged as e:
        record.finish("diverged", str(e))
        raise
    except BaseException as e:
        record.finish("failed", f"{type(e).__name__}: {e}")
        raise
    return record.finish("completed")


def _check_trainer(t: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            raise ConfigError(f"trainer.{key}", f"{t[key]!r} must be a positive integer")
    if not 0.0 <= t["label_smoothing"] < 1.0:
        raise ConfigError("trainer.label_smoothing", f"{t['label_smoothing']} must be in [0, 1)")


class _StartupClock:
    """time/startup_s: the first job of a process counts from the process's start (imports
    and config composition included); a later job in the same process (a sweep's basic
    launcher, a reused joblib worker) counts from its own start."""
    first_job_done = False

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = not _StartupClock.first_job_done
        _StartupClock.first_job_done = True

    def seconds(self) -> float | None:
        return seconds_since_process_start() if self.first else time.perf_counter() - self.started


@dataclass
class _Run:
    """Everything one run's epochs need, built once by `_set_up`."""

    cfg: dict[str, Any]
    record: RunRecord
    task: Classification
    spec: DataSpec
    model: nn.Module  # the module that owns the weights (checkpoints, memory counts)
    step_model: nn.Module  # the one that trains: `model`, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    amp: Callable[[], ContextManager]
    batches: tuple[TensorLoader, TensorLoader | None, TensorLoader]  # train, val, test
    best_val: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_images: int = 0
    last: dict[str, dict[str, float]] = field(default_factory=dict)  # the last epoch's train and val figures


def _set_up(cfg: dict[str, Any], record: RunRecord, parallel_jobs: int, clock: _StartupClock) -> _Run:
    """Check the config, build the model (before any data is read), load the data, and
    build what trains it."""
    t = cfg["trainer"]
    _check_trainer(t)
    generator = seed_everything(cfg["seed"])
    device = resolve_device(t["device"])
    reset_peak_memory(device)
    precision = resolve_precision(t["precision"], device)
    threads = setup_threads(t["threads"], parallel_jobs)
    task = TASKS.get(cfg["task"]["name"], "task.name")(cfg)
    model, spec = make_model(cfg)
    task.check_model(model)
    params, flops = count_cost(model, example_input(spec), cache_root(cfg["data"].get("cache_dir")))
    record.update({"model/params": params, "model/flops": flops, "device": str(device), "precision": precision,
                   "threads": threads})
    log.info("model: %s params, %.1f MFLOPs per image; %s, %s, %d threads",
             f"{params:,}", flops / 1e6, device, precision, threads)

    data = call_with_accepted(DATASETS.get(cfg["data"]["name"]).load, cfg["data"])
    log.info("data: %s, %d train / %d val / %d test images from %s", data.name, len(data.train),
             len(data.val) if data.val is not None else 0, len(data.test), data.source)
    memory_format = torch.channels_last if t["channels_last"] else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    batches = task.loaders(data, device, generator)
    steps = len(batches[0])
    optimizer = build_optimizer(model, **cfg["optim"])
    scheduler = build_scheduler(optimizer, t["epochs"] * steps, steps, **cfg["sched"])
    run = _Run(cfg, record, task, spec, model, torch.compile(model) if t["compile"] else model, optimizer,
               scheduler, task.loss(data, device), autocast(device, precision), batches,
               best_val={"acc": 0.0, task.headline.name: 0.0})
    record.update({"time/startup_s": clock.seconds()})
    return run


def _fit(run: _Run) -> None:
    for epoch in range(1, run.cfg["trainer"]["epochs"] + 1):
        row = _epoch(run, epoch)
        run.record.epoch(row)
        if run.cfg["trainer"]["checkpoint"]:
            save_torch(run.record.run_dir / "checkpoint.pt", {"epoch": epoch, "model": run.model.state_dict(),
                                                              "optimizer": run.optimizer.state_dict(),
                                                              "config": run.cfg})
        _log_epoch(run, row)


def _epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Train one epoch and validate; the epoch's row of the history."""
    t, (train_batches, val_batches, _) = run.cfg["trainer"], run.batches
    start = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    with EpochProgress(t["progress"], epoch, t["epochs"], len(train_batches) * t["batch_size"]) as bar:
        tr = train_epoch(run.step_model, train_batches, run.optimizer, run.scheduler, run.loss_fn, run.amp, bar.hook)
    run.last["train"] = tr
    row = {"epoch": epoch, "train/loss": tr["loss"], "train/acc": tr["acc"], "lr": lr,
           "throughput/images_per_s": tr["images"] / tr["seconds"]}
    if val_batches is not None:
        va = run.last["val"] = run.task.evaluate(run.step_model, val_batches, run.loss_fn, run.amp)
        run.best_val = {k: max(v, va[k]) for k, v in run.best_val.items()}
        row.update({f"val/{k}": v for k, v in va.items()})
    run.task.after_epoch(run.step_model, run.record, epoch)
    row["time/epoch_s"] = time.perf_counter() - start
    run.train_seconds += tr["seconds"]
    run.train_images += tr["images"]
    return row


def _log_epoch(run: _Run, row: dict[str, Any]) -> None:
    va = run.last.get("val")
    log.info("epoch %d/%d  train loss %.3f acc %.2f%%%s  %.0f img/s  %.1fs", row["epoch"],
             run.cfg["trainer"]["epochs"], row["train/loss"], 100 * row["train/acc"],
             f"  val loss {va['loss']:.3f} {run.task.describe(va)}" if va else "",
             row["throughput/images_per_s"], row["time/epoch_s"])


def _test(run: _Run) -> None:
    """Evaluate on the test split once, and record the final figures and costs."""
    te = run.task.evaluate(run.step_model, run.batches[2], run.loss_fn, run.amp)
    tr, va = run.last["train"], run.last.get("val")
    epoch_times = [r["time/epoch_s"] for r in run.record.metrics["history"]]
    final = {**{f"test/{k}": v for k, v in te.items()}, "train/loss": tr["loss"], "train/acc": tr["acc"],
             "train/images_per_s": run.train_images / run.train_seconds, "time/train_s": run.train_seconds,
             "time/epoch_max_over_first": max(epoch_times) / epoch_times[0],
             "memory/peak_mb": peak_memory_mb(next(run.model.parameters()).device)}
    final.update(_activation_memory(run))
    if va is not None:
        final.update({f"val/{k}": v for k, v in va.items()})
        final.update({f"val/{k}_best": v for k, v in run.best_val.items()})
    run.record.update(final)
    # TensorBoard gets the test figures too; those of the HParams table come with finish().
    run.record.scalars({k: v for k, v in final.items() if k.startswith("test/") and k not in run.record.hparam_metrics},
                       len(run.record.metrics["history"]))
    log.info("test %s  (loss %.3f)  %.0f img/s  in %s", run.task.describe(te), te["loss"],
             final["train/images_per_s"], run.record.run_dir)


def _activation_memory(run: _Run) -> dict[str, float]:
    """After the peak is read, and not in start-up (a CamVid batch takes about a second):
    counted on a CPU copy, so the figures are the same whatever device trained."""
    x = example_input(run.spec, run.cfg["trainer"]["batch_size"])
    memory = activation_memory(run.model, x, lambda out: out.float().mean())
    return {"memory/saved_activations_mb": memory["saved"] / 2**20,
            "memory/step_peak_mb": memory["train_peak"] / 2**20,
            "memory/inference_peak_mb": memory["inference_peak"] / 2**20}
