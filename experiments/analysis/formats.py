"""A comparison report as a terminal table, markdown, csv or json."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from .report import COSTS, Report, _show

FORMATS = ("table", "md", "csv", "json")


def rows(report: Report) -> list[dict[str, Any]]:
    """One plain dict per variant: what csv and json write, and tests read."""
    out = []
    for v in report.variants:
        row: dict[str, Any] = {"variant": v.label, **v.values, "n": v.n, "mean": v.mean, "std": v.std,
                               "ci_low": v.ci[0], "ci_high": v.ci[1], "min": v.min, "max": v.max,
                               "test": v.test, "p": v.p, "verdict": v.verdict}
        row.update({key: v.cost.get(key) for key in COSTS})
        row["seeds"] = v.seeds
        row["unfinished"] = v.unfinished
        row["runs"] = [str(r.dir) for r in v.runs]
        out.append({k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in row.items()})
    return out


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
    return str(x)


def table_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and text cells shared by the terminal table and markdown."""
    header = ["variant", "n", "mean", "std", f"{report.level} CI", "min–max", "vs best",
              *COSTS.values(), "unfinished"]
    body = []
    for v in report.variants:
        ci = f"[{_fmt(v.ci[0])}, {_fmt(v.ci[1])}]" if v.n > 1 else "—"
        span = f"{_fmt(v.min)}–{_fmt(v.max)}" if v.n else "—"
        verdict = v.verdict + (f" ({v.test}, p={v.p:.3g})" if v.p is not None else "")
        cost = [_fmt(v.cost.get(k)) for k in COSTS]
        unfinished = ", ".join(f"{n} {s}" for s, n in sorted(v.unfinished.items()))
        body.append([v.label, str(v.n), _fmt(v.mean), _fmt(v.std), ci, span, verdict or "—", *cost, unfinished])
    return header, body


def notes(report: Report) -> list[str]:
    """The lines around the table: what is shared, how it was tested, what did not finish."""
    lines = []
    if report.common:
        lines.append("same in every run: " + "  ".join(f"{k}={_show(v)}" for k, v in report.common.items()))
    lines.append(f"variants differ in: {', '.join(report.keys) or '(nothing: one variant)'}"
                 + (f" (which also sets {', '.join(report.also)})" if report.also else "")
                 + f"; {'higher' if report.goal == 'max' else 'lower'} {report.metric} is better")
    tests = sorted({v.test for v in report.variants if v.test})
    lines.append((f"vs best: two-sided {' / '.join(tests)}-test at alpha={report.alpha:g} (paired when both "
                  "variants ran the same seeds, Welch's otherwise)" if tests else
                  "vs best: no test ran (a verdict needs at least 2 seeds on both sides)")
                 + f"; CI: t-distribution, {report.level}")
    for run in report.unfinished:
        lines.append(f"{run.status}: {run.dir}" + (f"  ({run.error})" if run.error else ""))
    return lines


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    header, body = table_cells(report)
    table = Table(title=f"{report.metric} by variant, best first")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i in (0, 6, len(header) - 1) else "right")
    for v, cells in zip(report.variants, body):
        best = v.verdict.startswith("best")
        style = "bold green" if best else ("dim" if v.verdict == "worse" else "")
        # Escaped: a label such as model.order=[conv,pool,norm,act] is not a markup tag.
        table.add_row(*[("★ " if best and i == 0 else "") + escape(c) for i, c in enumerate(cells)],
                      style=style)
    console = Console(highlight=False)
    if not console.is_terminal:  # piped into a file: no reason to squeeze into 80 columns
        console.width = max(console.width, 200)
    console.print(table)
    for line in notes(report):
        console.print(line, markup=False)


def to_markdown(report: Report) -> str:
    header, body = table_cells(report)
    lines = [f"# {report.metric} by variant, best first", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for v, cells in zip(report.variants, body):
        if v.verdict.startswith("best"):
            cells = [f"**{cells[0]}** (best)", *cells[1:]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in notes(report)]
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
    }, indent=2, default=str) + "\n"
