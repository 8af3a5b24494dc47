"""The one user-facing error type, shared with `sampler.blocks`.

A `ConfigError` names the dotted config key and says how to fix it; the CLI
prints it as one paragraph and exits 2 without a traceback. Anything else is a
bug and keeps its traceback.
"""
from sampler.blocks.registry import ConfigError


class Diverged(ConfigError):
    """The loss became NaN or infinite: the run stops with status `diverged`."""


__all__ = ["ConfigError", "Diverged"]
