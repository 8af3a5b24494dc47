"""End-of-sweep bookkeeping, run by Hydra in the launching process.

Jobs of a multirun record their own failures (status `failed` in their
`metrics.json`) and return, so one bad job never stops the others; this
callback then says which failed, and the CLI exits non-zero.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# Set by the last multirun in this process; the CLI turns it into the exit code.
last_sweep: dict[str, Any] = {}


def read_runs(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run dir, metrics) for every job of a sweep that wrote a metrics file."""
    runs = []
    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        try:
            runs.append((path.parent, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as e:
            runs.append((path.parent, {"status": "unreadable", "error": str(e)}))
    return runs


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from rich.console import Console

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = read_runs(sweep_dir)
        failed = [(d.name, m) for d, m in runs if m.get("status") != "completed"]
        last_sweep.clear()
        last_sweep.update(dir=str(sweep_dir), jobs=len(runs), failed=[name for name, _ in failed])
        console = Console(stderr=True, highlight=False)
        console.print(f"sweep {sweep_dir}: {len(runs) - len(failed)} of {len(runs)} jobs completed")
        for name, m in failed:
            console.print(f"  [red]{m.get('status')}[/red] {name}: {m.get('error')}")
