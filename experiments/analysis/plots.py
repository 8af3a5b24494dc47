"""`sampler compare --plot`: three PNG figures beside the runs, and the same in TensorBoard.

- `compare_metric.png`: the metric per variant, mean with its confidence interval, every
  seed as a dot.
- `compare_curves.png`: learning curves from each run's per-epoch history (the numbers
  it also logged as TensorBoard scalars), mean ± std across seeds.
- `compare_cost.png`: the metric against each cost, the Pareto front marked.

Variants are named as in the terminal table: the key they share in the title or
legend, each value in full beside its point. A 0-1 metric's axis is in %, and its
intervals stop at 0 and 100%; cost axes read 370k, not 370000.

Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot, no
display, no global backend switch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .formats import number
from .report import COSTS, Report, Variant, is_fraction, metric_range, short_labels

CURVES = ("train/loss", "val/loss", "train/acc", "val/acc")
PARETO_COSTS = ("model/params", "model/flops", "time/total_s", "memory/peak_mb")  # lower is cheaper
TENSORBOARD_RUN = "compare"  # a run of its own inside the sweep dir


def save_plots(report: Report, folder: Path) -> list[Path]:
    """Write the figures into `folder` and log them to the TensorBoard run `folder/compare`."""
    figures = {"compare_metric": metric_figure(report), "compare_curves": curves_figure(report),
               "compare_cost": cost_figure(report)}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        FigureCanvasAgg(fig).print_png(str(path))
        written.append(path)
    log_figures(figures, folder / TENSORBOARD_RUN)
    return written


def log_figures(figures: dict[str, Figure], run_dir: Path) -> None:
    """The same figures as TensorBoard images; an earlier comparison's are replaced."""
    from torch.utils.tensorboard import SummaryWriter

    for old in run_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(run_dir))
    for name, fig in figures.items():
        writer.add_figure(name.replace("_", "/", 1), fig, close=False)
    writer.close()


def _grid(n: int, title: str) -> tuple[Figure, list[Axes]]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6 * cols, 4 * rows), layout="constrained")
    fig.suptitle(title)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def metric_figure(report: Report) -> Figure:
    variants = [v for v in report.variants if v.n]
    title, names = _names(report, variants)
    low, high = metric_range(report.metric)
    fig, (ax,) = _grid(1, f"{report.metric}: mean, {report.level} CI and each seed")
    for i, v in enumerate(variants):
        color = "tab:green" if v.verdict.startswith("best") else "tab:blue"
        if v.n > 1:  # the interval stops at the metric's range, as in the table
            lo, hi = max(v.ci[0], low), min(v.ci[1], high)
            ax.errorbar([i], [v.mean], yerr=[[v.mean - lo], [hi - v.mean]], fmt="o",
                        color=color, capsize=6, markersize=8)
        else:
            ax.plot([i], [v.mean], "o", color=color, markersize=8)
        ax.scatter(np.full(v.n, i + 0.12), v.scores, s=14, color="0.4", zorder=3)
    ax.set_xticks(range(len(variants)), [_wrap(n) for n in names], fontsize=8)
    ax.set_xlim(-0.5, max(len(variants), 1) - 0.5)  # no variant scored yet: an empty axis, not a singular one
    if not variants:
        _nothing_yet(ax, f"no completed run recorded {report.metric} yet")
    ax.set_xlabel(title)
    ax.set_ylabel(report.metric)
    _metric_axis(ax, report.metric)
    ax.grid(axis="y", alpha=0.3)
    return fig


def curves_figure(report: Report) -> Figure:
    tags = [t for t in CURVES if any(t in row for v in report.variants for r in _done(v)
                                     for row in r.metrics.get("history", []))]
    title, names = _names(report, report.variants)
    fig, axes = _grid(max(1, len(tags)), "learning curves: mean ± std across seeds")
    if not tags:
        _nothing_yet(axes[0], "no completed run recorded a learning curve yet")
    for ax, tag in zip(axes, tags):
        seen: set[int] = set()
        for v, name in zip(report.variants, names):
            epochs, mean, std = history_band(v, tag)
            seen.update(int(e) for e in epochs)
            if len(epochs):  # error bars too, so a single epoch still shows its spread
                bars = ax.errorbar(epochs, mean, yerr=std, marker="o", markersize=3, capsize=3,
                                   label=_wrap(name))
                ax.fill_between(epochs, mean - std, mean + std, color=bars.lines[0].get_color(), alpha=0.2)
        ax.set_title(tag)
        ax.set_xlabel("epoch")
        if len(seen) <= 12:
            ax.set_xticks(sorted(seen))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _metric_axis(ax, tag)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=title, title_fontsize=7)
    return fig


def history_band(variant: Variant, tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch, the mean and (n-1) std of `tag` across the variant's completed runs."""
    by_epoch: dict[int, list[float]] = {}
    for run in _done(variant):
        for row in run.metrics.get("history", []):
            if isinstance(row.get(tag), (int, float)):
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[tag]))
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
    return np.array(epochs), mean, std


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and score, cheapest first."""
    better: Callable[[float, float], bool] = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    front: list[int] = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1] if maximize else points[i][1])):
        if not front or better(points[i][1], points[front[-1]][1]):
            front.append(i)
    return front


def cost_figure(report: Report) -> Figure:
    variants = [v for v in report.variants if v.n]
    title, names = _names(report, variants)
    costs = [c for c in PARETO_COSTS if any(c in v.cost for v in variants)]
    fig, axes = _grid(max(1, len(costs)), f"{report.metric} against cost, by {title} (Pareto front in red)")
    if not costs:
        _nothing_yet(axes[0], f"no completed run recorded {report.metric} and a cost yet")
    for ax, cost in zip(axes, costs):
        have = [(v, name) for v, name in zip(variants, names) if cost in v.cost]
        points = [(v.cost[cost], v.mean) for v, _ in have]
        front = pareto_front(points, report.goal == "max")
        ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "o--", color="tab:red",
                markerfacecolor="none", markersize=12, label="Pareto front")
        ax.margins(x=0.1, y=0.12)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # 370k 372k 374k, not 370000371000…
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: number(x)))
        _metric_axis(ax, report.metric)
        ax.set_xlabel(f"{COSTS[cost]} (mean per run)")
        ax.set_ylabel(report.metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        for (_, name), point in zip(have, points):
            _label_inside(ax, _wrap(name, 30), point)
    return fig


def _label_inside(ax: Axes, text: str, point: tuple[float, float]) -> None:
    """A point's name beside it, turned towards the middle near an edge so that it stays
    inside the axes (and clipped there, never drawn over a neighbouring plot)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = (point[0] - x0) / (x1 - x0) if x1 > x0 else 0.5
    fy = (point[1] - y0) / (y1 - y0) if y1 > y0 else 0.5
    right, top = fx > 0.55, fy > 0.8
    ax.annotate(text, point, fontsize=7, xytext=(-6 if right else 6, -6 if top else 6),
                textcoords="offset points", ha="right" if right else "left",
                va="top" if top else "bottom", annotation_clip=True, clip_on=True)


def _nothing_yet(ax: Axes, text: str) -> None:
    """An axes with nothing to draw (every run unfinished) says so instead of showing a bare scale."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _metric_axis(ax: Axes, metric: str) -> None:
    if is_fraction(metric):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))


def _names(report: Report, variants: list[Variant]) -> tuple[str, list[str]]:
    """What the variants differ in (`model.pool`; `model.act, model.pool`) and each one's
    name without it (`max`; `act=gelu, pool=max`), as in the terminal table."""
    _, names = short_labels(report.keys, variants)
    return ", ".join(report.keys) or "variant", names


def _done(v: Variant) -> list[Any]:
    return v.counted  # completed, each job once (reruns set aside), as in the table


def _wrap(label: str, width: int = 24) -> str:
    """A long name on several lines, broken between its keys."""
    return label.replace(", ", ",\n") if len(label) > width else label
