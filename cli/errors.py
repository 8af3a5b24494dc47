"""How user errors reach the terminal: one paragraph, no traceback, exit code 2; and Ctrl-C:
one line, exit 130. Imports no torch: cli/__init__.py uses `interrupted` while torch loads."""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.markup import escape

from sampler.experiments.train.signals import drop_output

if TYPE_CHECKING:
    from sampler.experiments.errors import ConfigError

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


def interrupted(message: str = "interrupted", loading: bool = False) -> NoReturn:
    """Ctrl-C: `message` in one line, then exit 130. A second Ctrl-C while exiting ends the
    process at once (exit 130) instead of a traceback from Python's shutdown, and is ignored
    in its last steps, where Python would put back the default and die of it (-2).
    `loading`: Ctrl-C while the CLI's modules load, before anything was opened: exit at
    once, since tearing down a half-imported torch can abort (-6) or die of a second Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda number, frame: os._exit(INTERRUPTED))
        atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)  # after threads joined
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        drop_output()
    if loading:
        os._exit(INTERRUPTED)
    raise SystemExit(INTERRUPTED)
