"""What differs between tasks, behind the few calls the runner makes (a registry, DESIGN §3):
the model family a task trains, its batches, its loss, its metrics and its pictures.

- classification: one label per image. Metrics: loss, acc.
- segmentation: one label per pixel, void ignored. Metrics add pixel_acc,
  mean_class_acc, miou, boundary_f1 and iou/<class>; after every epoch a few fixed
  validation images are drawn as input | truth | prediction into TensorBoard, in
  the data set's palette.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import nn

from sampler.blocks import Segmenter
from sampler.blocks.registry import Registry, is_int, is_number

from ..data import DATASETS, VOID, Dataset, SegmentationLoader, TensorLoader
from ..errors import ConfigError
from ..runs.record import RunRecord
from .loop import evaluate
from .metrics import SegmentationMeter, median_frequency_weights, prediction_grid
from .probes import shift_metrics

TASKS: Registry = Registry("task")
Loaders = tuple[TensorLoader, "TensorLoader | None", TensorLoader]
# What every run's HParams entry reports besides its task's own metrics (lower is cheaper).
COST_METRICS = ("train/images_per_s", "time/total_s", "memory/step_peak_mb")


@dataclass(frozen=True)
class Headline:
    """A task's headline metric: the key its evaluation returns, and whether more is better.
    The log line, `val/<name>_best`, the HParams table, `sampler compare`'s default, the
    sweep summary and the value handed to Hydra's sweepers all read it from here."""

    name: str
    goal: str = "max"

    @property
    def val(self) -> str:
        return f"val/{self.name}"

    @property
    def val_best(self) -> str:
        return f"val/{self.name}_best"

    @property
    def test(self) -> str:
        return f"test/{self.name}"


def headline(task: str) -> Headline:
    return TASKS.get(task, "task.name").headline


def hparam_metrics(task: str) -> tuple[str, ...]:
    """The metrics of a run's HParams entry: the headline first, then the task's others."""
    cls = TASKS.get(task, "task.name") if task in TASKS else Classification
    h = cls.headline
    return (h.val_best, h.test, *cls.more_metrics, *COST_METRICS)


def objective(metrics: Mapping[str, Any], optimized_metric: str | None = None) -> float | None:
    """The number a Hydra sweeper optimises (lightning-hydra-template's `optimized_metric`):
    the key it names, or the task's best validation headline (its test value without a
    validation split)."""
    if optimized_metric:
        value = metrics.get(optimized_metric)
    else:
        task = metrics.get("task")
        h = headline(task if task in TASKS else "classification")
        value = metrics.get(h.val_best, metrics.get(h.test))
    return float(value) if is_number(value) else None


@TASKS.register("classification", "one label per image (head=linear); metrics: acc")
class Classification:
    headline = Headline("acc")
    more_metrics: tuple[str, ...] = ("test/loss",)  # in the HParams table after the headline

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    def check_model(self, model: nn.Module) -> None:
        if isinstance(model, Segmenter):
            raise ConfigError("task.name", "this head predicts a label per pixel: use task=segmentation, "
                              "or head=linear for classification")

    def loaders(self, data: Dataset, device: torch.device, generator: torch.Generator) -> Loaders:
        t, aug = self.cfg["trainer"], self.cfg["data"]["augment"]
        common = dict(mean=data.mean, std=data.std, device=device, channels_last=t["channels_last"])
        train = TensorLoader(data.train, t["batch_size"], shuffle=True, drop_last=len(data.train) > t["batch_size"],
                             crop_padding=aug["crop_padding"], flip=aug["flip"], generator=generator, **common)
        val = TensorLoader(data.val, t["eval_batch_size"], **common) if data.val is not None else None
        test = TensorLoader(data.test, t["eval_batch_size"], **common)
        return train, val, test

    def loss(self, data: Dataset, device: torch.device) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.cfg["trainer"]["label_smoothing"])

    def evaluate(self, model: nn.Module, batches: TensorLoader, loss_fn: nn.Module,
                 amp: Callable[[], ContextManager]) -> dict[str, float]:
        return evaluate(model, batches, loss_fn, amp, self.cfg["trainer"]["tta"])

    def after_epoch(self, model: nn.Module, record: RunRecord, epoch: int) -> None:
        pass

    def test_probes(self, model: nn.Module, batches: TensorLoader, amp: Callable[[], ContextManager]) -> dict[str, float]:
        """Measurements beyond the test metrics: with task.shift_px = k > 0, accuracy under
        shifts of 1..k pixels and the prediction consistency (train/probes.py)."""
        px = self.cfg["task"].get("shift_px", 0)
        return shift_metrics(model, batches, amp, px) if px else {}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"acc {100 * metrics['acc']:.2f}%"


@TASKS.register("segmentation", "one label per pixel (head=progressive|oneshot|...); metrics: miou, boundary_f1")
class Segmentation(Classification):
    headline = Headline("miou")
    more_metrics = ("test/boundary_f1", "test/pixel_acc", "test/mean_class_acc", "test/loss")

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        task = cfg["task"]
        balance = task["class_balance"]
        if not is_number(balance) or not 0 <= balance <= 1:
            raise ConfigError("task.class_balance", f"{balance!r} must be a number in [0, 1]: 0 = plain "
                              "cross-entropy, 1 = SegNet's median frequency balancing")
        for key in ("boundary_px", "log_images"):
            if not is_int(task[key]) or task[key] < 0:
                raise ConfigError(f"task.{key}", f"{task[key]!r} must be an integer >= 0")
        self.samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, Segmenter):
            raise ConfigError("head.name", f"{self.cfg['head']['name']} gives one label per image; segmentation "
                              "needs a dense head: head=progressive (or oneshot, progressive_skips)")

    def loaders(self, data: Dataset, device: torch.device, generator: torch.Generator) -> Loaders:
        t, aug = self.cfg["trainer"], self.cfg["data"]["augment"]
        common = dict(mean=data.mean, std=data.std, device=device, channels_last=t["channels_last"])
        train = SegmentationLoader(data.train, t["batch_size"], shuffle=True,
                                   drop_last=len(data.train) > t["batch_size"], crop=aug["crop"],
                                   scale=aug["scale"], flip=aug["flip"], generator=generator, **common)
        val = SegmentationLoader(data.val, t["eval_batch_size"], **common) if data.val is not None else None
        test = SegmentationLoader(data.test, t["eval_batch_size"], **common)
        self.classes = data.classes
        self._pick_samples(data, val or test)
        return train, val, test

    def _pick_samples(self, data: Dataset, loader: SegmentationLoader) -> None:
        """The same few images, spread over the split, drawn after every epoch."""
        n = self.cfg["task"]["log_images"]
        split = data.val if data.val is not None else data.test
        if not n:
            return
        index = torch.linspace(0, len(split) - 1, min(n, len(split))).round().long()
        images = split.images[index].to(loader.device)
        normed = ((images.float() - loader.mean) / loader.std).contiguous(memory_format=loader.memory_format)
        self.samples = (images, split.labels[index], normed)
        self.palette = DATASETS.get(data.name).palette

    def loss(self, data: Dataset, device: torch.device) -> nn.Module:
        weight, balance = None, self.cfg["task"]["class_balance"]
        if balance:
            weight = median_frequency_weights(data.train.labels, len(data.classes)).pow(balance).to(device)
        return nn.CrossEntropyLoss(weight=weight, ignore_index=VOID,
                                   label_smoothing=self.cfg["trainer"]["label_smoothing"])

    def evaluate(self, model: nn.Module, batches: TensorLoader, loss_fn: nn.Module,
                 amp: Callable[[], ContextManager]) -> dict[str, float]:
        meter = SegmentationMeter(self.classes, self.cfg["task"]["boundary_px"])
        scores = evaluate(model, batches, loss_fn, amp, self.cfg["trainer"]["tta"], on_batch=meter.update)
        return {**scores, **meter.compute()}

    @torch.no_grad()
    def after_epoch(self, model: nn.Module, record: RunRecord, epoch: int) -> None:
        if self.samples is None or record.writer is None:
            return
        images, truth, normed = self.samples
        model.eval()
        pred = model(normed).argmax(1)
        grid = prediction_grid(images, truth, pred, self.palette)
        record.image("val/prediction", grid, epoch)

    def describe(self, metrics: dict[str, float]) -> str:
        return f"miou {100 * metrics['miou']:.2f}%  acc {100 * metrics['acc']:.2f}%"
