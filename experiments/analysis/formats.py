"""A comparison report as a terminal table, markdown, csv or json.

The terminal table fits the terminal, 100 columns when the output is not one (unless
COLUMNS says otherwise): variants are named in full under the key they share, a 0-1
metric is shown in %, mean ± CI half-width share one column and no interval reaches
past the metric's range, the verdict is short with its test named once below, and at
most the two cost columns that tell variants apart are shown (`wide`: every column).
Markdown is the wide table; csv and json keep the raw numbers and every seed.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Sequence

from .report import COSTS, Report, Variant, _show, is_fraction, metric_range, short_labels, why_left_out

FORMATS = ("table", "md", "csv", "json")
WIDTH = 100  # columns of a table printed into a file or a pipe, unless COLUMNS says otherwise
# The cost columns in the order they tell variants apart: counted costs first (any difference
# is real), then measured ones (they must differ by more than NOISE to tell anything).
TELLING = ("model/params", "model/flops", "memory/step_peak_mb", "memory/peak_mb", "time/total_s",
           "train/images_per_s")
COUNTED = ("model/params", "model/flops")
NOISE = 0.05
DEFAULT_COSTS = 2
CLIPPED = "†"  # marks an interval clipped to the metric's range
LEFT = ("vs best", "test", "unfinished")  # left-aligned, with the variant column


def rows(report: Report) -> list[dict[str, Any]]:
    """One plain dict per variant: what csv and json write, and tests read."""
    out = []
    for v in report.variants:
        row: dict[str, Any] = {"variant": v.label, **v.values, "n": v.n, "mean": v.mean, "std": v.std,
                               "ci_low": v.ci[0], "ci_high": v.ci[1], "min": v.min, "max": v.max,
                               "test": v.test, "p": v.p, "p_uncorrected": v.p_raw, "verdict": v.verdict,
                               "diff": v.diff, "diff_ci_low": v.diff_ci[0] if v.diff_ci else None,
                               "diff_ci_high": v.diff_ci[1] if v.diff_ci else None, "p_better": v.p_better}
        row.update({key: v.cost.get(key) for key in COSTS})
        row["seeds"] = v.seeds
        row["scores"] = v.scores
        row["unfinished"] = v.unfinished
        row["runs"] = [str(r.dir) for r in v.runs]
        row["reruns"] = [str(r.dir) for r in v.reruns]  # completed, but their job already counts
        out.append({k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in row.items()})
    return out


# ---------------------------------------------------------------- cells

def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def number(x: Any) -> str:
    """A cost or a plain metric, short: 370.1k, 2,875, 41.5, 0.4151."""
    if _missing(x):
        return "—"
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return str(x)
    size = abs(x)
    for start, scale, suffix in ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if size >= start:
            return f"{x / scale:.4g}{suffix}"
    return f"{x:,.0f}" if size >= 1000 else f"{x:.4g}"


class Scale:
    """How one metric's values read: in % (points) for a 0-1 fraction, plain otherwise."""

    def __init__(self, metric: str):
        self.percent = is_fraction(metric)
        self.low, self.high = metric_range(metric)

    def __call__(self, x: float, unit: bool = False) -> str:
        if self.percent:
            return f"{100 * x:.2f}" + ("%" if unit else "")
        return number(x)

    @property
    def range(self) -> str:
        if self.percent:
            return "[0, 100]%"
        return f"[{number(self.low)}, {number(self.high) if math.isfinite(self.high) else '∞'})"


def mean_ci(v: Variant, scale: Scale) -> tuple[str, bool]:
    """`58.49% ± 1.51`; where the interval reaches past the metric's range it is clipped there
    and shown uneven, `98.50% +1.50/−9.20†`. Returns the cell and whether it was clipped."""
    if not v.n:
        return "—", False
    mean = scale(v.mean, unit=True)
    low, high = v.ci
    if v.n < 2 or math.isnan(low):
        return mean, False
    if scale.low <= low and high <= scale.high:
        return f"{mean} ± {scale((high - low) / 2)}", False
    low, high = max(low, scale.low), min(high, scale.high)
    return f"{mean} +{scale(high - v.mean)}/−{scale(v.mean - low)}{CLIPPED}", True


def _p(p: float, alpha: float) -> str:
    if p < 0.001:
        return "p<0.001"
    for digits in (2, 3, 4):  # never round across alpha
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    return f"p={text}"


def verdict(v: Variant, alpha: float) -> str:
    """best, worse p=0.03, ≈ p=0.31, n<2 (the test is named once, in the notes)."""
    if v.verdict in ("best", "baseline"):
        return v.verdict
    if v.p is not None and v.verdict == "better":
        return f"better {_p(v.p, alpha)}"
    if v.verdict.startswith("best"):
        return "best n<2"
    if v.verdict.startswith("needs more seeds"):
        return "n<2"
    if v.p is not None and v.verdict == "worse":
        return f"worse {_p(v.p, alpha)}"
    if v.p is not None and v.verdict == "not distinguishable":
        return f"≈ {_p(v.p, alpha)}"
    return v.verdict or "—"


def cost_columns(report: Report, wide: bool = False, most: int = DEFAULT_COSTS) -> list[str]:
    """Every cost any variant recorded (wide), else the `most` that tell the variants apart."""
    have = [k for k in COSTS if any(k in v.cost for v in report.variants)]
    if wide:
        return have
    telling = [k for k in TELLING if k in have and _differs(report, k)]
    return telling[:most]


def _differs(report: Report, key: str) -> bool:
    values = [v.cost[key] for v in report.variants if key in v.cost]
    if len(values) < 2:
        return False
    low, high = min(values), max(values)
    spread = (high - low) / max(abs(low), abs(high)) if high != low else 0.0
    return spread > (1e-9 if key in COUNTED else NOISE)


def table_cells(report: Report, wide: bool = False, *, costs: Sequence[str] | None = None,
                only: Sequence[str] | None = None,
                full_labels: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text cells shared by the terminal table and markdown.

    wide: also std, min–max, the test and every cost column.
    costs: the cost columns (metrics.json keys); default: every one when wide, else the
      two that tell the variants apart best (cost_columns).
    only: keep only these columns after the variant's (by title): a wide table in parts.
    full_labels: `model.pool=max` in a `variant` column, instead of `max` under `model.pool`.
    """
    scale = Scale(report.metric)
    title, labels = (("variant", [v.label for v in report.variants]) if full_labels
                     else short_labels(report.keys, report.variants))
    keys = cost_columns(report, wide) if costs is None else list(costs)
    columns: dict[str, list[str]] = {
        "n": [str(v.n) for v in report.variants],
        f"mean ± {report.level} CI": [mean_ci(v, scale)[0] for v in report.variants],
    }
    if wide:
        columns["std"] = [scale(v.std) if v.n > 1 else "—" for v in report.variants]
        columns["min–max"] = [f"{scale(v.min)}–{scale(v.max, unit=True)}" if v.n else "—"
                              for v in report.variants]
    columns[f"vs {report.reference}"] = [verdict(v, report.alpha) for v in report.variants]
    if wide:
        columns["test"] = [v.test or "—" for v in report.variants]
    for k in keys:
        columns[COSTS[k]] = [number(v.cost.get(k)) for v in report.variants]
    if any(v.unfinished for v in report.variants):
        columns["unfinished"] = [", ".join(f"{n} {s}" for s, n in sorted(v.unfinished.items()))
                                 for v in report.variants]
    if only is not None:
        columns = {k: c for k, c in columns.items() if k in only}
    header = [title, *columns]
    body = [[label, *(c[i] for c in columns.values())] for i, label in enumerate(labels)]
    return header, body


# ---------------------------------------------------------------- notes below the table

def notes(report: Report, wide: bool = False, costs: Sequence[str] | None = None) -> list[str]:
    """The lines below the table: what is shared, how it was tested, what did not finish.

    costs: the cost columns the table shows; the others are pointed to (`--wide`)."""
    scale = Scale(report.metric)
    lines = [f"{len(u.jobs)} of {u.planned} jobs of sweep {u.sweep_dir} never started: {u.describe()}; "
             f"resume with `{u.resume}`" for u in report.unstarted]
    if report.common:
        lines.append("same in every run: " + "  ".join(f"{k}={_show(v)}" for k, v in report.common.items()))
    lines.append(f"variants differ in: {', '.join(report.keys) or '(nothing: one variant)'}"
                 + (f" (which also sets {', '.join(report.also)})" if report.also else "")
                 + f"; {'higher' if report.goal == 'max' else 'lower'} {report.metric} is better"
                 + (", in %" if scale.percent else ""))
    lines.append(_tests(report))
    if report.corrected:
        lines.append(f"p-values Holm-corrected over the {report.corrected} tests against the {report.reference} "
                     "(family-wise error at alpha); json and csv keep the uncorrected ones too")
    if report.effect is not None:
        shown = f"{100 * report.effect:g} points" if scale.percent else f"{report.effect:g}"
        if report.seeds_needed is not None:
            lines.append(f"seeds needed: about {report.seeds_needed} per variant to separate a difference of "
                         f"{shown} at alpha={report.alpha:g} with {report.power:.0%} power (per-seed spread so far "
                         f"{scale(report.needed_spread) if report.needed_spread is not None else '?'})")
        else:
            lines.append(f"seeds needed for a difference of {shown}: not estimable yet (a variant needs 2 seeds), "
                         "or more than 1,000")
    if report.left_out:
        many = len(report.left_out) > 1
        lines.append(f"left out: {len(report.left_out)} completed run{'s' if many else ''} without a number for "
                     f"{report.metric}: " + "; ".join(f"{r.dir} ({why_left_out(r, report.metric)})"
                                                      for r in report.left_out))
    if report.reruns:
        many = len(report.reruns) > 1
        lines.append(f"reruns set aside: {len(report.reruns)} completed run{'s' if many else ''} "
                     f"repeat{'' if many else 's'} the config and seed of a newer one; each config and seed "
                     "counts once, by its newest run (json and csv list them under reruns)")
    clipped = any(mean_ci(v, scale)[1] for v in report.variants)
    lines.append(f"CI: t-distribution, {report.level}, shown as mean ± half-width"
                 + (" in % points" if scale.percent else "")
                 + (f"; {CLIPPED} clipped to {scale.range}, the metric's range: +above/−below the mean"
                    if clipped else ""))
    if not wide and costs is not None:
        hidden = [COSTS[k] for k in cost_columns(report, wide=True) if k not in costs]
        if hidden:
            lines.append(f"--wide: also std, min–max and {', '.join(hidden)} (mean per run)")
    for run in report.unfinished:
        lines.append(f"{run.status}: {run.dir}" + (f"  ({run.error})" if run.error else ""))
    return lines


def _tests(report: Report) -> str:
    tested = [v for v in report.variants if v.test]
    kinds = sorted({v.test for v in tested})
    if not kinds:
        line = f"vs {report.reference}: no test ran (a verdict needs at least 2 seeds on both sides)"
    elif len(kinds) == 1:
        line = (f"vs {report.reference}: two-sided {kinds[0]}-test at alpha={report.alpha:g} ("
                + ("both variants ran the same seeds" if kinds[0] == "paired t" else
                   "unpaired: the variants did not each run the same seeds once") + ")")
    else:
        _, labels = short_labels(report.keys, report.variants)
        name = dict(zip(map(id, report.variants), labels))
        line = (f"vs {report.reference}: two-sided t-test at alpha={report.alpha:g}: "
                + "; ".join(f"{k} for " + ", ".join(name[id(v)] for v in tested if v.test == k) for k in kinds)
                + " (paired when both variants ran the same seeds, Welch's otherwise)")
    verdicts = {v.verdict for v in report.variants}
    if "not distinguishable" in verdicts:
        line += f"; ≈: not distinguishable from the {report.reference}"
    if any(s.startswith(("needs more seeds", "best mean")) for s in verdicts):
        line += "; n<2: needs more seeds (a test needs at least 2 on both sides)"
    return line


# ---------------------------------------------------------------- the terminal table

def console_for_table() -> Any:
    """stdout's console: the terminal's width, or WIDTH when writing into a file or a pipe
    (COLUMNS, when set, wins either way)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        console.width = WIDTH
    return console


def print_table(report: Report, wide: bool = False, console: Any = None) -> None:
    """The report as a table that fits the console, with its notes below.

    Without `wide`, the cost columns are the two most telling ones, one, or none: as many
    as fit with no cell wrapped. With `wide`, every column; what does not fit goes into a
    second table (the costs), and a third (std, min–max, test) below the first."""
    console = console or console_for_table()
    width = console.width
    if wide:
        keys = cost_columns(report, wide=True)
        header, _ = table_cells(report, wide=True, costs=keys)
        spread, cost = ["std", "min–max", "test"], [COSTS[k] for k in keys]
        main = [c for c in header[1:] if c not in spread + cost]
        for parts in ([header[1:]], [main + spread, cost], [main, spread, cost]):
            tables = [table_cells(report, wide=True, costs=keys, only=part) for part in parts if part]
            if all(_fits(h, b, width) for h, b in tables):
                break
    else:
        for most in range(DEFAULT_COSTS, -1, -1):
            keys = cost_columns(report, most=most)
            tables = [table_cells(report, costs=keys)]
            if _fits(*tables[0], width):
                break
    for i, (header, body) in enumerate(tables):
        title = f"{report.metric} by variant, best first" if i == 0 else None
        console.print(_rich_table(report, title, header, body, width))
    for line in notes(report, wide, keys):
        console.print(line, markup=False)


STAR = "★ "  # before the best variant's name


def _widths(header: list[str], body: list[list[str]], wrap: Sequence[int] = (0,),
            headers: bool = True) -> list[int]:
    """Each column's narrowest width with nothing folded: the columns in `wrap` wrap between
    the words of their cells, the others keep their line; with `headers`, a header wraps
    between its words."""
    from rich.cells import cell_len

    widths = []
    for i, title in enumerate(header):
        cells = [row[i] for row in body]
        if i in wrap:
            cells = [w for c in cells for w in c.split()]
        width = max([cell_len(c) for c in cells + (title.split() if headers else [title])], default=1)
        widths.append(width + (cell_len(STAR) if i == 0 else 0))
    return widths


def _room(header: list[str], width: int) -> int:
    return width - 3 * len(header) - 1  # each column has padding 2 and a border, plus one border


def _fits(header: list[str], body: list[list[str]], width: int) -> bool:
    """Whether the table fits with only headers wrapped, and a variant's name between its keys."""
    return sum(_widths(header, body)) <= _room(header, width)


def _layout(header: list[str], body: list[list[str]], width: int) -> list[int | None]:
    """Column widths: none given (rich's own) when everything fits on its line. Otherwise
    headers wrap first; then the variant's name, the verdict and the other text columns wrap
    between words, getting what room is left in that order; then the name folds. A console
    too narrow even for that: rich folds what it must, never cutting with "…"."""
    room = _room(header, width)
    natural = _widths(header, body, wrap=(), headers=False)
    if sum(natural) <= room:
        return [None] * len(header)
    texts = [0, *(i for i, col in enumerate(header) if col in LEFT or col.startswith("vs "))]
    widths = _widths(header, body, wrap=())
    if sum(widths) > room:
        widths = _widths(header, body, wrap=texts)
    if sum(widths) > room:  # the name folds inside a word too, down to 8 columns
        widths[0] = room - sum(widths[1:])
        return list(widths) if widths[0] >= 8 else [None] * len(header)
    for i in [*texts, *range(len(header))]:  # what is left: names, then headers, unwrapped
        widths[i] += max(0, min(natural[i] - widths[i], room - sum(widths)))
    return list(widths)


def _rich_table(report: Report, title: str | None, header: list[str], body: list[list[str]], width: int) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for i, (col, fixed) in enumerate(zip(header, _layout(header, body, width))):
        table.add_column(col, justify="left" if i == 0 or col in LEFT or col.startswith("vs ") else "right",
                         overflow="fold",
                         width=fixed)
    for v, cells in zip(report.variants, body):
        best = v.verdict.startswith("best")
        style = "bold green" if best else ("dim" if v.verdict == "worse" else "")
        # Escaped: a label such as [conv,pool,norm,act] is not a markup tag.
        table.add_row(*[(STAR if best and i == 0 else "") + escape(c) for i, c in enumerate(cells)],
                      style=style)
    return table


# ---------------------------------------------------------------- files

def to_markdown(report: Report) -> str:
    """The wide table, every variant named in full; in % where the metric is a fraction."""
    header, body = table_cells(report, wide=True, full_labels=True)
    lines = [f"# {report.metric} by variant, best first", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for v, cells in zip(report.variants, body):
        if v.verdict.startswith("best"):
            cells = [f"**{cells[0]}** (best)", *cells[1:]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in notes(report, wide=True)]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    data = rows(report)
    if not data:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(data[0]), lineterminator="\n")
    writer.writeheader()
    for row in data:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    return buffer.getvalue()


def to_json(report: Report) -> str:
    return json.dumps({
        "metric": report.metric, "goal": report.goal, "alpha": report.alpha, "keys": report.keys,
        "also_differ": report.also,
        "common": report.common, "variants": rows(report),
        "unfinished": [{"dir": str(r.dir), "status": r.status, "error": r.error} for r in report.unfinished],
        "left_out": [{"dir": str(r.dir), "why": why_left_out(r, report.metric)} for r in report.left_out],
        "unstarted": [{"sweep": str(u.sweep_dir), "planned": u.planned, "jobs": u.jobs, "resume": u.resume}
                      for u in report.unstarted],
    }, indent=2, default=str) + "\n"
