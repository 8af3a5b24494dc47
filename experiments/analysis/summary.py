"""The end of a sweep: the Hydra callback that lists the jobs that did not complete and
writes `summary.md` (the comparison table) into the sweep directory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback

from ..errors import ConfigError
from ..runs.atomic import write_text

if TYPE_CHECKING:
    from ..runs.read import Run

# Hydra instantiates SweepSummary for every run, and the CLI imports this module for each
# `sampler train`: what only the end of a sweep needs (reading runs, the comparison
# report) is imported there, not at every start.

log = logging.getLogger("sampler")

# Set by the last multirun in this process; the CLI turns it into the exit code (and names its dir
# on Ctrl-C).
last_sweep: dict[str, Any] = {}


class SweepSummary(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        last_sweep.update(dir=str(config.hydra.sweep.dir))  # for Ctrl-C's message, whatever the launcher

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        summarize(Path(config.hydra.sweep.dir))


def summarize(sweep_dir: Path) -> None:
    """Say how the sweep's jobs ended, write `summary.md`, and leave the tally in
    `last_sweep` for the CLI's exit code: at the end of every multirun, and when a
    launcher or sweeper stops one early (the CLI calls it then)."""
    from rich.console import Console
    from rich.markup import escape

    from ..runs.read import find_runs

    runs = find_runs([sweep_dir], strict=False)
    # `running` is left only while the run's process lives (read_run calls a dead one
    # killed): another process is training that job, which is not a failure of ours.
    elsewhere = [r for r in runs if r.status in ("running", "pending")]  # pending: queued in SLURM
    failed = [r for r in runs if r.status not in ("completed", "running", "pending")]
    last_sweep.clear()
    last_sweep.update(dir=str(sweep_dir), jobs=len(runs), failed=[r.name for r in failed])
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    done = len(runs) - len(failed) - len(elsewhere)
    console.print(f"sweep {sweep_dir}: {done} of {len(runs)} jobs completed"
                  + (f", {len(elsewhere)} running elsewhere" if elsewhere else ""))
    for run in elsewhere:
        process = run.metrics.get("process") or {}
        where = (f"pid {process.get('pid')} on {process.get('host')}" if run.status == "running"
                 else str(run.error))
        console.print(f"  [yellow]{'running elsewhere' if run.status == 'running' else 'pending'}[/yellow] "
                      f"{escape(run.name)} ({escape(where)})")
    for run in failed:
        console.print(f"  [red]{run.status}[/red] {escape(f'{run.name}: {run.error}')}")
    summary = write_summary(sweep_dir, runs)
    if summary is not None:
        console.print(f"summary: {summary}   (sampler compare {sweep_dir} for more)")


def write_summary(sweep_dir: Path, runs: list[Run]) -> Path | None:
    """`summary.md` in the sweep dir: the comparison table, or why there is none."""
    from .formats import to_markdown
    from .report import build_report

    path = sweep_dir / "summary.md"
    try:
        text = to_markdown(build_report(runs))
    except ConfigError as e:  # e.g. no job completed, so there is no metric to compare
        text = f"# {sweep_dir.name}\n\nNo comparison: {e.key}: {e.message}\n"
    except Exception:  # the summary must never turn a finished sweep into a crash
        log.exception("could not write %s", path)
        return None
    write_text(path, text)
    return path
