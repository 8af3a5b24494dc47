"""How user errors reach the terminal: one paragraph, no traceback, exit code 2."""
from __future__ import annotations

from rich.console import Console

from sampler.experiments.errors import ConfigError

USER_ERROR = 2
INTERRUPTED = 130


def report(error: ConfigError) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/bold red] [bold]{error.key}[/bold]: {error.message}", markup=True)
