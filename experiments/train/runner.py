"""One training run, wired from a plain config dict. Reads as a table of contents:
build and check the model, load the data, train, evaluate, record. What differs
between classification and segmentation (batches, loss, metrics, pictures) is
asked of the task (experiments/tasks.py)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sampler.blocks import (ACTS, HEAD_STYLES, HEADS, NORMS, POOLS, UPSAMPLERS, assemble, build_encoder,
                            build_head, init_weights)
from sampler.blocks.registry import call_with_accepted

from ..runs.atomic import save_torch
from .cost import activation_memory, count_cost
from ..data import DATASETS, DataSpec, cache_root
from .env import (peak_memory_mb, reset_peak_memory, resolve_device, resolve_precision, seconds_since_process_start,
                  seed_everything, setup_threads)
from ..errors import ConfigError, Diverged
from .loop import autocast, train_epoch
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from .progress import EpochProgress
from ..runs.record import HPARAM_METRICS, RunRecord
from .tasks import TASKS

log = logging.getLogger("sampler")

# Discrete domains for the HParams table, so it sorts and filters by choice.
HPARAM_DOMAINS = {
    "model.pool": POOLS.names(), "model.norm": NORMS.names(), "model.act": ACTS.names(),
    "head.name": HEADS.names(), "optim.name": OPTIMIZERS.names(), "sched.name": SCHEDULES.names(),
    "head.style": HEAD_STYLES.names(), "head.upsample": UPSAMPLERS.names(), "task.name": TASKS.names(),
    "data.name": DATASETS.names(), "trainer.precision": ["auto", "bf16", "fp32"],
    "trainer.device": ["auto", "cpu", "cuda", "mps"],
}


def make_model(cfg: dict[str, Any]) -> tuple[nn.Module, DataSpec]:
    """The model from the config, validated before any data is read: a Classifier, or a
    Segmenter when the head is dense (head.name=decoder)."""
    spec = DATASETS.get(cfg["data"]["name"], "data.name").spec(**cfg["data"])
    try:
        encoder = build_encoder(**cfg["model"], in_channels=spec.in_channels, input_size=spec.input_size)
    except ConfigError as e:
        raise e.with_prefix("model") from None
    head_cfg = dict(cfg["head"])
    try:
        head = build_head(head_cfg.pop("name"), encoder.out_channels, spec.num_classes, encoder=encoder, **head_cfg)
    except ConfigError as e:
        raise e.with_prefix("head") from None
    return init_weights(assemble(encoder, head)), spec


def example_input(spec: DataSpec, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, spec.in_channels, *spec.height_width)


def _check_trainer(t: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            raise ConfigError(f"trainer.{key}", f"{t[key]!r} must be a positive integer")
    if not 0.0 <= t["label_smoothing"] < 1.0:
        raise ConfigError("trainer.label_smoothing", f"{t['label_smoothing']} must be in [0, 1)")


def train(cfg: dict[str, Any], run_dir: Path, overrides: list[str], parallel_jobs: int = 1) -> dict[str, Any]:
    """Train and evaluate one configuration; everything lands in `run_dir`."""
    record = RunRecord(run_dir, cfg, overrides, HPARAM_DOMAINS)
    try:
        _train(cfg, record, parallel_jobs, _StartupClock())
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


def _train(cfg: dict[str, Any], record: RunRecord, parallel_jobs: int, clock: _StartupClock) -> None:
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
    train_batches, val_batches, test_batches = task.loaders(data, device, generator)
    optimizer = build_optimizer(model, **cfg["optim"])
    scheduler = build_scheduler(optimizer, t["epochs"] * len(train_batches), len(train_batches), **cfg["sched"])
    loss_fn = task.loss(data, device)
    amp = autocast(device, precision)
    step_model = torch.compile(model) if t["compile"] else model

    record.update({"time/startup_s": clock.seconds()})
    best_val, train_seconds, train_images = {"acc": 0.0, task.headline: 0.0}, 0.0, 0
    for epoch in range(1, t["epochs"] + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with EpochProgress(t["progress"], epoch, t["epochs"], len(train_batches) * t["batch_size"]) as bar:
            tr = train_epoch(step_model, train_batches, optimizer, scheduler, loss_fn, amp, bar.hook)
        row = {"epoch": epoch, "train/loss": tr["loss"], "train/acc": tr["acc"], "lr": lr,
               "throughput/images_per_s": tr["images"] / tr["seconds"]}
        if val_batches is not None:
            va = task.evaluate(step_model, val_batches, loss_fn, amp)
            best_val = {k: max(v, va[k]) for k, v in best_val.items()}
            row.update({f"val/{k}": v for k, v in va.items()})
        task.after_epoch(step_model, record, epoch)
        row["time/epoch_s"] = time.perf_counter() - start
        train_seconds += tr["seconds"]
        train_images += tr["images"]
        record.epoch(row)
        if t["checkpoint"]:
            save_torch(record.run_dir / "checkpoint.pt", {"epoch": epoch, "model": model.state_dict(),
                                                          "optimizer": optimizer.state_dict(), "config": cfg})
        log.info("epoch %d/%d  train loss %.3f acc %.2f%%%s  %.0f img/s  %.1fs", epoch, t["epochs"],
                 tr["loss"], 100 * tr["acc"],
                 f"  val loss {va['loss']:.3f} {task.describe(va)}" if val_batches else "",
                 row["throughput/images_per_s"], row["time/epoch_s"])

    te = task.evaluate(step_model, test_batches, loss_fn, amp)
    epoch_times = [r["time/epoch_s"] for r in record.metrics["history"]]
    final = {**{f"test/{k}": v for k, v in te.items()}, "train/loss": tr["loss"], "train/acc": tr["acc"],
             "train/images_per_s": train_images / train_seconds, "time/train_s": train_seconds,
             "time/epoch_max_over_first": max(epoch_times) / epoch_times[0],
             "memory/peak_mb": peak_memory_mb(device)}
    # After the peak is read, and not in start-up (a CamVid batch takes about a second):
    # counted on a CPU copy, so the figures are the same whatever device trained.
    memory = activation_memory(model, example_input(spec, t["batch_size"]), lambda out: out.float().mean())
    final.update({"memory/saved_activations_mb": memory["saved"] / 2**20,
                  "memory/step_peak_mb": memory["train_peak"] / 2**20,
                  "memory/inference_peak_mb": memory["inference_peak"] / 2**20})
    if val_batches is not None:
        final.update({f"val/{k}": v for k, v in va.items()})
        final.update({f"val/{k}_best": v for k, v in best_val.items()})
    record.update(final)
    # TensorBoard gets the test figures too; those of the HParams table come with finish().
    record.scalars({k: v for k, v in final.items() if k.startswith("test/") and k not in HPARAM_METRICS},
                   len(record.metrics["history"]))
    log.info("test %s  (loss %.3f)  %.0f img/s  in %s", task.describe(te), te["loss"],
             final["train/images_per_s"], record.run_dir)
