"""How user errors reach the terminal: one paragraph, no traceback, exit code 2."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from sampler.experiments.errors import ConfigError
from sampler.experiments.train.signals import drop_output

USER_ERROR = 2
INTERRUPTED = 130


def report(error: ConfigError, console: Console | None = None) -> None:
    console = console or Console(stderr=True, highlight=False)
    # Escaped: messages quote config values such as [conv,pool,norm,act], which rich
    # would otherwise take for markup tags and drop. On a terminal the paragraph wraps at
    # words to its width; piped or captured it stays one line (what grep and logs read).
    try:
        console.print(f"[bold red]error:[/bold red] [bold]{escape(error.key)}[/bold]: {escape(error.message)}",
                      markup=True, soft_wrap=not console.is_terminal)
    except OSError:  # no terminal left to read it (SIGHUP): the run dir has recorded it, the exit code stands
        drop_output()
