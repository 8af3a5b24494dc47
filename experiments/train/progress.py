"""A rich progress bar with live loss, accuracy and images/s; silent when not a TTY."""
from __future__ import annotations

import sys
import time
from typing import Any

from torch import Tensor

from .signals import drop_output


class EpochProgress:
    """Context manager around one epoch; `hook` is the train loop's step callback."""

    def __init__(self, enabled: bool | None, epoch: int, epochs: int, total_images: int):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.epoch, self.epochs, self.total = epoch, epochs, total_images
        self.progress: Any = None
        self._last = 0.0
        self._start = time.perf_counter()

    def __enter__(self) -> "EpochProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn(f"epoch {self.epoch}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  {task.fields[ips]:.0f} img/s"),
                TimeRemainingColumn(), transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, loss=0.0, acc=0.0, ips=0.0)
        return self

    def hook(self, seen: int, loss_sum: Tensor, correct: Tensor) -> None:
        now = time.perf_counter()
        if self.progress is None or (now - self._last < 0.25 and seen < self.total):
            return
        self._last = now
        self.progress.update(self.task, completed=seen, loss=float(loss_sum) / seen,
                             acc=float(correct) / seen, ips=seen / (now - self._start))

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            try:
                self.progress.stop()
            except OSError:  # the terminal closed (SIGHUP): the run's own end must not become this error
                drop_output()
