"""SIGTERM and SIGUSR2 as requests to stop at the next step boundary (DESIGN §8).

`timeout`, `scancel` and SLURM's time limit send SIGTERM; submitit's launcher asks for
SIGUSR2 before a job's time runs out. Either way the run finishes the step it is in,
checkpoints, records `status: interrupted` with the signal named, and then hands the
signal to whoever handled it before (submitit requeues the job from there)."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = ("SIGTERM", "SIGUSR2")


class StopRequest:
    """Context manager: while inside, the signals set `requested` instead of killing."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for name in SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(number).name

    def __call__(self) -> bool:
        return self.requested is not None

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def forward(self) -> None:
        """Hand the signal to the handler that was there before (submitit's requeue), if any."""
        if self.requested is None:
            return
        number = int(signal.Signals[self.requested])
        previous = self._previous.get(number)
        if callable(previous):
            previous(number, None)
