"""One training run, wired from a plain config dict. Reads as a table of contents:
check the config, set up (or resume from a checkpoint), train, test, record. What
differs between classification and segmentation (batches, loss, metrics, pictures)
is asked of the task (train/tasks.py); how a run survives its faults (checkpoints,
signals, full disks) is DESIGN §8."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from sampler.blocks.registry import call_with_accepted, is_int, is_number
from sampler.blocks.whiten import fit_whitening

from ..data import DATASETS, DataSpec, TensorLoader, cache_root
from ..data.loaders import flip_mode
from ..errors import ConfigError, Diverged, Stopped, WriteError
from ..runs.atomic import save_torch
from ..runs.hparams import RESUMABLE_CHANGES, flatten
from ..runs.naming import swept_keys
from ..runs.record import RunRecord
from .choices import domains
from .cost import activation_memory, count_cost
from .env import (check_threads, contention, deterministic, nondeterministic_op, parse_deterministic, peak_memory_mb,
                  reset_peak_memory, resolve_compile, resolve_device, resolve_precision, rng_state,
                  seconds_since_process_start, seed_everything, set_rng_state, setup_threads, torch_import_seconds)
from .loop import EpochState, StopAtStep, autocast, train_epoch, tta_mode
from .model import example_input, make_model
from .optim import (Lookahead, build_lookahead, build_optimizer, build_scheduler, check_lookahead, check_optimizer,
                    check_scheduler)
from .probes import BatchStatsProbe, batch_norms, bn_mode_gap
from .progress import EpochProgress
from .signals import StopRequest
from .tasks import TASKS, Classification, hparam_metrics

log = logging.getLogger("sampler")

CHECKPOINT = "checkpoint.pt"


def train(cfg: dict[str, Any], run_dir: Path, overrides: list[str], parallel_jobs: int = 1,
          resume: bool = False, record_refusal: bool = False) -> dict[str, Any]:
    """Train and evaluate one configuration; everything lands in `run_dir`.

    resume: continue from `run_dir`'s checkpoint when it has one (a config that differs
    from the checkpoint's is refused). A config refused before training leaves no
    TensorBoard events; with `record_refusal` (a sweep's job) its metrics.json says
    `failed`, so the sweep summary lists it."""
    checkpoint = load_checkpoint(run_dir, cfg) if resume else None
    try:
        check_config(cfg)
    except ConfigError as e:
        if record_refusal:
            RunRecord(run_dir, cfg, overrides, tensorboard=False).finish("failed", f"refused: {e}")
        raise
    record = RunRecord(run_dir, cfg, overrides, domains(), hparam_metrics(cfg["task"]["name"]),
                       resumed=checkpoint and {**checkpoint["record"], "history": checkpoint["history"],
                                               "step": checkpoint["step"]}, swept=swept_keys())
    device = resolve_device(cfg["trainer"]["device"])
    with StopRequest() as stop:
        try:
            with deterministic(cfg["trainer"]["deterministic"], device) as nondeterministic:
                run = _set_up(cfg, record, parallel_jobs, _StartupClock(), checkpoint)
                _fit(run, stop)
                _test(run, stop)
            # the ops are listed once deterministic() ends; under the handlers still, so that
            # a SIGTERM now waits for `completed` to be written
            record.update({"nondeterministic_ops": nondeterministic})
            return record.finish("completed")
        except KeyboardInterrupt:
            _finish(record, "interrupted", "interrupted by the user (Ctrl-C)")
            raise
        except Stopped as e:
            _finish(record, "interrupted", str(e))
            stop.forward()  # a requeueing handler (submitit) takes it from here
            raise
        except Diverged as e:
            _finish(record, "diverged", str(e))
            raise
        except RuntimeError as e:
            if (op := nondeterministic_op(e)) is None:
                _finish(record, "failed", f"{type(e).__name__}: {e}")
                raise
            error = ConfigError("trainer.deterministic", f"{op} has no deterministic implementation on the "
                                f"{device.type} (torch.use_deterministic_algorithms). Choose an option that avoids "
                                "it, or run with trainer.deterministic=warn to run it anyway and record its name in "
                                "metrics.json (nondeterministic_ops)")
            _finish(record, "failed", str(error))
            raise error from None
        except BaseException as e:
            _finish(record, "failed", f"{type(e).__name__}: {e}")
            raise


def _finish(record: RunRecord, status: str, error: str) -> None:
    """Record the end status without hiding why the run ended: a disk too full even for
    metrics.json leaves its last good content and the first error goes up."""
    try:
        record.finish(status, error)
    except WriteError as e:
        log.error("could not record status %r: %s: %s", status, e.key, e.message)


def check_config(cfg: dict[str, Any]) -> None:
    """Every key that can be checked without data: trainer, seed, device, precision,
    task, model and head, optimizer, schedule and the data set's own keys."""
    t = cfg["trainer"]
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not is_int(t[key]) or t[key] < 1:
            raise ConfigError(f"trainer.{key}", f"{t[key]!r} must be a positive integer")
    if not is_number(t["label_smoothing"]) or not 0.0 <= t["label_smoothing"] < 1.0:
        raise ConfigError("trainer.label_smoothing", f"{t['label_smoothing']!r} must be in [0, 1)")
    if not is_int(cfg["seed"]):
        raise ConfigError("seed", f"{cfg['seed']!r} must be an integer")
    device = resolve_device(t["device"])
    resolve_precision(t["precision"], device)
    resolve_compile(t["compile"], device)
    check_threads(t["threads"])
    task = TASKS.get(cfg["task"]["name"], "task.name")(cfg)
    _check_data_task(cfg)
    model, spec = make_model(cfg)
    task.check_model(model)
    if cfg["task"]["name"] == "classification" and t["batch_size"] < 2 and cfg["model"]["norm"] == "batch":
        raise ConfigError("trainer.batch_size", "BatchNorm in training mode needs at least 2 images per batch "
                          "to compute batch statistics; use trainer.batch_size >= 2 or model.norm=group|none")
    check_optimizer(**cfg["optim"])
    check_scheduler(**cfg["sched"])
    _check_probe_keys(cfg)
    tta_mode(t["tta"])
    check_lookahead(t["ema"], t["ema_every"])
    _check_data_keys(cfg["data"], spec)


def _check_data_task(cfg: dict[str, Any]) -> None:
    """A data set serves one task: CamVid's masks under task=classification failed with a
    KeyError once the data had loaded (its data.augment has no crop_padding)."""
    name, task = cfg["data"]["name"], cfg["task"]["name"]
    serves = getattr(DATASETS.get(name, "data.name"), "task", task)
    if serves != task:
        fitting = ", ".join(n for n in DATASETS.names() if getattr(DATASETS.get(n), "task", task) == task)
        raise ConfigError("data", f"data={name} is a {serves} data set and this run's task is {task}; use "
                          f"task={serves}" + (" (it picks data=camvid, a dense head and their defaults"
                                              + (f"; keep data={name} beside it" if name != "camvid" else "") + ")"
                                              if serves == "segmentation" else "")
                          + f", or a {task} data set: {fitting}")


def _check_probe_keys(cfg: dict[str, Any]) -> None:
    """trainer.deterministic and the measurements of experiments/train/probes.py."""
    t, task = cfg["trainer"], cfg["task"]
    parse_deterministic(t["deterministic"])
    if not isinstance(t["bn_diagnostics"], bool):
        raise ConfigError("trainer.bn_diagnostics", f"{t['bn_diagnostics']!r} must be true or false")
    shift = task.get("shift_px", 0)
    if not is_int(shift) or not 0 <= shift <= 8:
        raise ConfigError("task.shift_px", f"{shift!r} must be a whole number of pixels from 0 (off) to 8")
    level = task["converge_at"]
    if not is_number(level) or not 0 < level <= 1:
        raise ConfigError("task.converge_at", f"{level!r} must be a fraction in (0, 1], e.g. 0.6 for "
                          "val/epochs_to_60")


def _check_data_keys(d: dict[str, Any], spec: DataSpec) -> None:
    """The types of the data keys, and the augmentation against the image size the data set
    declares (`spec`); whether the split sizes fit the data is checked when it is read."""
    for key in ("val_size", "subset", "test_size", "split_seed"):
        value = d.get(key)
        if value is not None and (not is_int(value) or value < 0):
            raise ConfigError(f"data.{key}", f"{value!r} must be a whole number >= 0"
                              + ("" if key in ("val_size", "split_seed") else " of images (null: all)"))
    augment = d.get("augment") or {}
    if "flip" in augment:
        flip_mode(augment["flip"])
    padding = augment.get("crop_padding")
    if padding is not None:
        # Reflect padding mirrors the image inside itself, so it needs fewer pixels than the shorter side.
        most = min(spec.height_width) - 1
        if not is_int(padding) or not 0 <= padding <= most:
            raise ConfigError("data.augment.crop_padding", f"{padding!r} must be a whole number of pixels from 0 "
                              f"(off) to {most}: the reflect padding of a {spec.height_width[0]}x"
                              f"{spec.height_width[1]} image must be smaller than the image (airbench: 2, "
                              "the usual: 4)")
    crop = augment.get("crop")
    if crop is not None and (not isinstance(crop, (list, tuple)) or len(crop) != 2
                             or not all(is_int(side) and side > 0 for side in crop)):
        raise ConfigError("data.augment.crop", f"{crop!r} must be [height, width] in whole pixels > 0, "
                          "or null for data.size")
    scale = augment.get("scale")
    if scale is not None and (not isinstance(scale, (list, tuple)) or len(scale) != 2
                              or not all(is_number(z) and z > 0 for z in scale) or scale[0] > scale[1]):
        raise ConfigError("data.augment.scale", f"{scale!r} must be [min, max] zoom factors > 0 with min <= max, "
                          "e.g. [0.75, 1.25]; [1, 1] = no zoom")


class _StartupClock:
    """time/startup_s: the first job of a process counts from the process's start (imports
    and config composition included); a later job in the same process (a sweep's basic
    launcher, a reused joblib worker) counts from its own start.

    `parts` splits it three ways, summing to the total: time/startup_import_torch_s (the
    first job only; env.torch_import_seconds says how exact it is), time/startup_dynamo_s
    (the torch._dynamo import that the first optimizer forces, or an uncached FLOP count
    before it: `import_dynamo` times it) and time/startup_sampler_s (the rest: sampler's
    own start-up, config, data, model, record)."""
    first_job_done = False

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = not _StartupClock.first_job_done
        _StartupClock.first_job_done = True
        self.dynamo_s = 0.0

    def seconds(self) -> float | None:
        return seconds_since_process_start() if self.first else time.perf_counter() - self.started

    def import_dynamo(self) -> None:
        """Import torch._dynamo now, timed, unless this process has it already."""
        if "torch._dynamo" not in sys.modules:
            start = time.perf_counter()
            import torch._dynamo  # noqa: F401

            self.dynamo_s += time.perf_counter() - start

    def parts(self) -> dict[str, float | None]:
        total = self.seconds()
        torch_s = torch_import_seconds() if self.first else 0.0
        if total is None or torch_s is None:
            return {"time/startup_s": total, "time/startup_import_torch_s": torch_s,
                    "time/startup_dynamo_s": self.dynamo_s, "time/startup_sampler_s": None}
        torch_s = max(0.0, min(torch_s, total - self.dynamo_s))  # the process clock ticks in 10 ms
        return {"time/startup_s": total, "time/startup_import_torch_s": torch_s,
                "time/startup_dynamo_s": self.dynamo_s, "time/startup_sampler_s": total - torch_s - self.dynamo_s}


@dataclass
class _Run:
    """Everything one run's epochs need, built once by `_set_up`; the fields after the
    first block are what a checkpoint carries besides the model and optimizer."""

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
    generator: torch.Generator  # orders and augments the training batches
    epochs_done: int = 0
    partial: EpochState | None = None  # the epoch a signal stopped, resumed from its step
    epoch_start_generator: torch.Tensor | None = None  # the generator as that epoch began
    epoch_lr: float = 0.0  # the lr that epoch began with (its history row shows it)
    lookahead: Lookahead | None = None  # trainer.ema: the averaged weights
    best_val: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_images: int = 0
    first_loss: list[float] = field(default_factory=list)  # the run's first step loss (divergence rule)
    last: dict[str, dict[str, float]] = field(default_factory=dict)  # the last epoch's train and val figures


def _set_up(cfg: dict[str, Any], record: RunRecord, parallel_jobs: int, clock: _StartupClock,
            checkpoint: dict[str, Any] | None) -> _Run:
    """Seed, build the model (before any data is read), load the data, build what trains
    it, and put back a checkpoint's state."""
    t = cfg["trainer"]
    generator = seed_everything(cfg["seed"])
    device = resolve_device(t["device"])
    reset_peak_memory(device)
    precision = resolve_precision(t["precision"], device)
    compiled = resolve_compile(t["compile"], device)
    threads = setup_threads(t["threads"], parallel_jobs)
    if device.type == "cpu" and (warning := contention(threads)):
        log.warning(warning)
    task = TASKS.get(cfg["task"]["name"], "task.name")(cfg)
    model, spec = make_model(cfg)
    if (warm := getattr(DATASETS.get(cfg["data"]["name"]), "warm", None)) is not None:
        call_with_accepted(warm, cfg["data"])  # the data's fingerprint, in a child process beside the import
    clock.import_dynamo()  # what the FLOP count (uncached) or else the first optimizer would import
    params, flops = count_cost(model, example_input(spec), cache_root(cfg["data"].get("cache_dir")))
    record.update({"model/params": params, "model/flops": flops, "device": str(device), "precision": precision,
                   "compiled": compiled, "threads": threads, "deterministic": parse_deterministic(t["deterministic"])})
    log.info("model: %s params, %.1f MFLOPs per image; %s, %s%s, %d threads", f"{params:,}", flops / 1e6,
             device, precision, ", compiled" if compiled else "", threads)

    data = call_with_accepted(DATASETS.get(cfg["data"]["name"]).load, cfg["data"])
    log.info("data: %s, %d train / %d val / %d test images from %s", data.name, len(data.train),
             len(data.val) if data.val is not None else 0, len(data.test), data.source)
    record.update({"data/test_images": len(data.test)})
    memory_format = torch.channels_last if t["channels_last"] else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    batches = task.loaders(data, device, generator)
    fit_whitening(model, batches[0].sample)  # model.whiten: its filters from the training images' patches
    steps = len(batches[0])
    optimizer = build_optimizer(model, **cfg["optim"], batch_size=t["batch_size"])
    scheduler = build_scheduler(optimizer, t["epochs"] * steps, steps, **cfg["sched"])
    run = _Run(cfg, record, task, spec, model, torch.compile(model) if compiled else model, optimizer,
               scheduler, task.loss(data, device), autocast(device, precision), batches, generator,
               best_val={"acc": 0.0, task.headline.name: 0.0},
               lookahead=build_lookahead(model, optimizer, steps, t["epochs"] * steps, t["ema"], t["ema_every"]))
    if checkpoint is not None:
        _restore(run, checkpoint)
    record.update(clock.parts())
    return run


def _fit(run: _Run, stop: StopRequest) -> None:
    """The epochs still to train; a checkpoint after each, and one at the step where a
    SIGTERM or SIGUSR2 stopped the run."""
    for epoch in range(run.epochs_done + 1, run.cfg["trainer"]["epochs"] + 1):
        if run.partial is None:
            run.epoch_start_generator = run.generator.get_state()
        try:
            row = _epoch(run, epoch, stop)
        except StopAtStep as s:
            _save_checkpoint(run, s.state)
            raise _stopped(run, stop, epoch, s.state.step) from None
        run.epochs_done, run.partial = epoch, None
        run.record.epoch(row)
        run.epoch_start_generator = run.generator.get_state()
        _save_checkpoint(run)
        _log_epoch(run, row)
        if stop() and epoch < run.cfg["trainer"]["epochs"]:  # after the last epoch, the test is seconds away
            raise _stopped(run, stop, epoch + 1, 0)


def _epoch(run: _Run, epoch: int, stop: StopRequest) -> dict[str, Any]:
    """Train one epoch (or the rest of a stopped one) and validate; the epoch's history row."""
    t, (train_batches, val_batches, _) = run.cfg["trainer"], run.batches
    start = time.perf_counter() - (run.partial.seconds if run.partial else 0.0)
    if run.partial is None:
        run.epoch_lr = run.optimizer.param_groups[0]["lr"]
    probe = BatchStatsProbe(run.model) if t["bn_diagnostics"] else None
    with EpochProgress(t["progress"], epoch, t["epochs"], len(train_batches) * t["batch_size"]) as bar, \
            probe or contextlib.nullcontext():
        tr = train_epoch(run.step_model, train_batches, run.optimizer, run.scheduler, run.loss_fn, run.amp,
                         bar.hook, state=run.partial, should_stop=stop, first_loss=run.first_loss,
                         peak_lr=run.cfg["optim"]["lr"])
    run.last["train"] = tr
    row = {"epoch": epoch, "train/loss": tr["loss"], "train/acc": tr["acc"], "lr": run.epoch_lr,
           "throughput/images_per_s": tr["images"] / tr["seconds"]}
    if val_batches is not None:
        va = run.last["val"] = run.task.evaluate(run.step_model, val_batches, run.loss_fn, run.amp)
        run.best_val = {k: max(v, va[k]) for k, v in run.best_val.items()}
        row.update({f"val/{k}": v for k, v in va.items()})
    if probe is not None:
        row.update(_bn_diagnostics(run, probe, epoch))
    run.task.after_epoch(run.step_model, run.record, epoch)
    row["time/epoch_s"] = time.perf_counter() - start
    run.train_seconds += tr["seconds"]  # a resumed epoch's figures include its steps before the stop
    run.train_images += tr["images"]
    return row


def _bn_diagnostics(run: _Run, probe: BatchStatsProbe, epoch: int) -> dict[str, float]:
    """trainer.bn_diagnostics, after each epoch: each BatchNorm's running statistics
    against the batch statistics of the epoch's last training batches (scalars, and
    TensorBoard histograms), and the validation figures in train mode beside eval mode."""
    values = probe.scalars()
    run.record.histograms(probe.histograms(), epoch)
    if run.batches[1] is not None and probe.layers:
        values.update(bn_mode_gap(run.model, run.batches[1], run.loss_fn, run.amp, run.cfg["trainer"]["batch_size"],
                                  "val"))
    return values


def _convergence(run: _Run) -> dict[str, float | None]:
    """How fast the validation headline rose: `val/epochs_to_<pct>`, the first epoch at
    which it reached task.converge_at (null when it never did), and `val/<headline>_auc`,
    the area under its curve per epoch (its mean over the epochs)."""
    name, level = run.task.headline.name, run.cfg["task"]["converge_at"]
    curve = [(row["epoch"], row[f"val/{name}"]) for row in run.record.metrics["history"] if f"val/{name}" in row]
    if not curve:
        return {}
    reached = next((epoch for epoch, value in curve if value >= level), None)
    return {f"val/epochs_to_{round(100 * level)}": reached, f"val/{name}_auc": sum(v for _, v in curve) / len(curve)}


def _stopped(run: _Run, stop: StopRequest, epoch: int, step: int) -> Stopped:
    where = f"epoch {epoch}, step {step} of {len(run.batches[0])}" if step else f"the start of epoch {epoch}"
    if not run.cfg["trainer"]["checkpoint"]:
        return Stopped(str(stop.requested), f"the run stopped at {where} without a checkpoint "
                       "(trainer.checkpoint=false), so it cannot be continued")
    return Stopped(str(stop.requested), f"the run stopped at {where} and saved {CHECKPOINT} there; continue it "
                   f"with `sampler train resume={run.record.run_dir}` (in a sweep: the same command with "
                   "resume=true)")


def _log_epoch(run: _Run, row: dict[str, Any]) -> None:
    va = run.last.get("val")
    log.info("epoch %d/%d  train loss %.3f acc %.2f%%%s  %.0f img/s  %.1fs", row["epoch"],
             run.cfg["trainer"]["epochs"], row["train/loss"], 100 * row["train/acc"],
             f"  val loss {va['loss']:.3f} {run.task.describe(va)}" if va else "",
             row["throughput/images_per_s"], row["time/epoch_s"])


def _test(run: _Run, stop: StopRequest | None = None) -> None:
    """Evaluate on the test split once, and record the final figures and costs. A SIGTERM
    is answered between its parts (the test pass, the probes, BatchNorm's mode gap; the
    probes of task.shift_px take half a minute), not after all of them."""
    te = run.task.evaluate(run.step_model, run.batches[2], run.loss_fn, run.amp)
    _stop_in_test(run, stop)
    tr, va = run.last["train"], run.last.get("val")
    epoch_times = [r["time/epoch_s"] for r in run.record.metrics["history"]]
    final = {**{f"test/{k}": v for k, v in te.items()}, "train/loss": tr["loss"], "train/acc": tr["acc"],
             "train/images_per_s": run.train_images / max(run.train_seconds, 1e-9), "time/train_s": run.train_seconds,
             "time/epoch_max_over_first": max(epoch_times) / epoch_times[0],
             "memory/peak_mb": peak_memory_mb(next(run.model.parameters()).device)}
    final.update(_activation_memory(run))
    final.update(run.task.test_probes(run.model, run.batches[2], run.amp))
    _stop_in_test(run, stop)
    final.update(_convergence(run))
    if run.cfg["trainer"]["bn_diagnostics"] and batch_norms(run.model):
        history = run.record.metrics["history"]
        final.update({k: v for k, v in history[-1].items() if k.startswith("bn/")})
        final.update(bn_mode_gap(run.model, run.batches[2], run.loss_fn, run.amp, run.cfg["trainer"]["batch_size"],
                                 "test"))
        _stop_in_test(run, stop)
    if va is not None:
        final.update({f"val/{k}": v for k, v in va.items()})
        final.update({f"val/{k}_best": v for k, v in run.best_val.items()})
    run.record.update(final)
    # TensorBoard gets the test figures too; those of the HParams table come with finish().
    once = ("test/", "bn/test_", "val/epochs_to_")  # figures of the whole run, not of an epoch
    run.record.scalars({k: v for k, v in final.items() if (k.startswith(once) or k.endswith("_auc"))
                        and k not in run.record.hparam_metrics and isinstance(v, (int, float))},
                       len(run.record.metrics["history"]))
    log.info("test %s  (loss %.3f, %d images)  %.0f img/s  in %s", run.task.describe(te), te["loss"],
             run.record.metrics["data/test_images"], final["train/images_per_s"], run.record.run_dir)


def _stop_in_test(run: _Run, stop: StopRequest | None) -> None:
    if stop is None or not stop():
        return
    epochs = run.cfg["trainer"]["epochs"]
    if not run.cfg["trainer"]["checkpoint"]:
        raise Stopped(str(stop.requested), f"the run stopped in its final test, after its {epochs} epochs, without "
                      "a checkpoint (trainer.checkpoint=false), so it cannot be continued")
    raise Stopped(str(stop.requested), f"the run stopped in its final test; its {epochs} epochs are trained and "
                  f"{CHECKPOINT} holds them, so `sampler train resume={run.record.run_dir}` runs the test alone")


def _activation_memory(run: _Run) -> dict[str, float]:
    """After the peak is read, and not in start-up (a CamVid batch takes about a second):
    counted on a CPU copy, so the figures are the same whatever device trained."""
    x = example_input(run.spec, run.cfg["trainer"]["batch_size"])
    memory = activation_memory(run.model, x, lambda out: out.float().mean())
    return {"memory/saved_activations_mb": memory["saved"] / 2**20,
            "memory/step_peak_mb": memory["train_peak"] / 2**20,
            "memory/inference_peak_mb": memory["inference_peak"] / 2**20}


# ---------------------------------------------------------------- checkpoints (DESIGN §8)

def _save_checkpoint(run: _Run, partial: EpochState | None = None) -> None:
    """Everything the next step depends on, written atomically: after an epoch, or at the
    step boundary where a signal stopped the run (`partial`)."""
    if not run.cfg["trainer"]["checkpoint"]:
        return
    save_torch(run.record.run_dir / CHECKPOINT, {
        "format": 1, "config": run.cfg, "epoch": run.epochs_done, "step": partial.step if partial else 0,
        "partial": asdict(partial) if partial else None, "epoch_lr": run.epoch_lr,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "rng": rng_state(run.generator),
        "lookahead": run.lookahead.state_dict() if run.lookahead else None,
        "epoch_start_generator": run.epoch_start_generator, "best_val": run.best_val,
        "train_seconds": run.train_seconds, "train_images": run.train_images, "first_loss": run.first_loss,
        "last": run.last, "history": run.record.metrics["history"],
        "record": {k: run.record.metrics.get(k) for k in ("started_at", "resumes", "time/total_s")},
    })


def load_checkpoint(run_dir: Path, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The run's checkpoint, or None when it has none (it then starts from epoch 1). A
    checkpoint of another config is refused, naming the keys that differ."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError("resume", f"{path} cannot be read ({type(e).__name__}: {e}); it is damaged or not "
                          "sampler's. Delete it to start the run over in that directory") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != 1:
        raise ConfigError("resume", f"{path} is not a checkpoint this sampler can resume from "
                          "(written by an older version); delete it to start the run over")
    before, now = flatten(checkpoint["config"]), flatten(cfg)
    differ = sorted(k for k in set(before) | set(now)
                    if k not in RESUMABLE_CHANGES and before.get(k, "<absent>") != now.get(k, "<absent>"))
    if differ:
        shown = "; ".join(f"{k}: {before.get(k, '<absent>')!r} then, {now.get(k, '<absent>')!r} now" for k in differ[:6])
        raise ConfigError("resume", f"the config differs from the checkpoint's in {len(differ)} key(s): {shown}. "
                          "A resumed run must compute what the first attempt computed: drop those overrides, or "
                          "start a new run without resume (only "
                          f"{', '.join(RESUMABLE_CHANGES)} may change)")
    return checkpoint


def _restore(run: _Run, checkpoint: dict[str, Any]) -> None:
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    if run.lookahead is not None:
        run.lookahead.load_state_dict(checkpoint["lookahead"])
    run.batches[0].epoch = checkpoint["epoch"]  # the alternating flip goes on from the right parity
    run.epochs_done = checkpoint["epoch"]
    run.best_val, run.first_loss = dict(checkpoint["best_val"]), list(checkpoint["first_loss"])
    run.train_seconds, run.train_images = checkpoint["train_seconds"], checkpoint["train_images"]
    run.last, run.epoch_lr = checkpoint["last"], checkpoint["epoch_lr"]
    set_rng_state(checkpoint["rng"], run.generator)
    if checkpoint["partial"] is not None:
        # The stopped epoch is drawn again from its start, so the data generator is put
        # back where that epoch began; the steps already trained are skipped.
        run.partial = EpochState(**checkpoint["partial"])
        run.generator.set_state(checkpoint["epoch_start_generator"])
    run.epoch_start_generator = checkpoint["epoch_start_generator"]
    log.info("resumed from %s: %d epochs done%s", run.record.run_dir / CHECKPOINT, run.epochs_done,
             f", epoch {run.epochs_done + 1} at step {run.partial.step}" if run.partial else "")
