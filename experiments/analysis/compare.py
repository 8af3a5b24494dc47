"""`sampler compare`: the ablation's answer, from run directories alone (DESIGN §4, §7)."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..runs.read import find_runs
from ..runs.sweep import unstarted_jobs
from .formats import FORMATS, print_table, to_csv, to_json, to_markdown
from .report import Report, build_report, default_metric, is_fraction


def compare(paths: Sequence[Path], metric: str | None = None, by: Sequence[str] = (),
            ignore: Sequence[str] = (), fmt: str = "table", alpha: float = 0.05, goal: str | None = None,
            plot: bool = False, out: Path | None = None, wide: bool = False, baseline: str | None = None,
            effect: float | None = None, power: float = 0.8) -> Report:
    """What `sampler compare` does: find, group, test, print (and plot). `effect` is in the
    metric's displayed units: points of % for accuracies and IoUs."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if effect is not None and not (math.isfinite(effect) and effect > 0):  # in the user's units, before the /100
        raise ConfigError("--effect", f"{effect} must be a positive number: the size of the difference to "
                          "separate, in points of % for accuracies and IoUs (e.g. 0.5)")
    by = [k for item in by for k in item.split(",") if k]
    runs = find_runs(paths)
    if effect is not None and is_fraction(metric or default_metric(runs)):
        effect = effect / 100  # points of % → the fraction metrics.json holds
    report = build_report(runs, metric, by, ignore, alpha, goal, baseline, effect, power)
    report.unstarted = [u for u in map(unstarted_jobs, map(Path, paths)) if u is not None]
    if fmt == "table":
        print_table(report, wide=wide)
    else:
        print({"md": to_markdown, "csv": to_csv, "json": to_json}[fmt](report), end="")
    if plot:
        from .plots import save_plots

        written = save_plots(report, Path(out or paths[0]))
        print("plots: " + "  ".join(map(str, written)), file=sys.stderr)
    return report
