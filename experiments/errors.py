"""The user-facing errors, shared with `sampler.blocks`.

A `ConfigError` names the dotted config key (or the path) and says how to fix it;
the CLI prints it as one paragraph without a traceback and exits with its
`exit_code`: 2 for a mistake in the command, 1 for a fault of the machine (a full
disk), 143 for a run stopped by SIGTERM or SIGUSR2 and 129 by SIGHUP. Anything else is a bug and keeps its
traceback.
"""
from sampler.blocks.registry import ConfigError


class Diverged(ConfigError):
    """The loss is not finite, or stays far above where it started: status `diverged`."""


class WriteError(ConfigError):
    """A file of the run could not be written (disk full, read-only, permissions)."""

    exit_code = 1


class Stopped(ConfigError):
    """A signal stopped the run at a step boundary, after a checkpoint; `key` names it."""

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        # A hang-up exits as the shell reports a process it killed (128 + 1); SIGTERM's 143
        # stays the code for the schedulers' signals, SIGUSR2 included, as documented.
        return 129 if self.key == "SIGHUP" else 143


__all__ = ["ConfigError", "Diverged", "Stopped", "WriteError"]
