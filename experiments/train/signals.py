"""SIGTERM, SIGUSR2 and SIGHUP as requests to stop at the next step boundary (DESIGN §8).

`timeout`, `scancel` and SLURM's time limit send SIGTERM; submitit's launcher asks for
SIGUSR2 before a job's time runs out; a terminal or ssh session that closes sends SIGHUP
(the commonest way a run started by hand dies). Either way the run finishes the step it is in,
checkpoints, records `status: interrupted` with the signal named, and then hands the
signal to whoever handled it before (submitit requeues the job from there)."""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = ("SIGTERM", "SIGUSR2", "SIGHUP")


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


def drop_output() -> None:
    """The terminal is gone (a write raised EIO after a hang-up, or EPIPE): point stdout
    and stderr at /dev/null, so that later writes, and Python's flush at exit (which
    would turn the exit code into 120), succeed instead of making a stopped run a failed one."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)
