"""`sampler compare`: the ablation's answer, from run directories alone (DESIGN §4, §7).

Discovery finds every run directory under the given paths and never stops at a
half-written, failed or still-running run: it is shown with its status. A
variant is the set of config values that differ between runs, minus the seed
(DESIGN §7). Per variant: n, mean, standard deviation, a t-based confidence
interval, min and max, and a test against the best variant: a paired t-test
when both ran exactly the same seeds (the seed fixes init, data order and
augmentation, so pairing removes that shared noise), Welch's t-test otherwise.
With fewer than two runs on either side there is no verdict, only a request for
more seeds. Cost columns come from the same metrics.json files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from ..runs.record import NOT_HPARAMS, flatten

DEFAULT_METRIC = "test/acc"
# Keys that never make two runs different variants: the seed is the noise being
# averaged over; the rest say where or how a run ran, not what it ran.
NOT_VARIANT = ("seed", "resume", *NOT_HPARAMS)
# Recorded by the run, not configured; a comparison must not mix them silently.
RECORDED = ("precision", "device")
COSTS = {  # metrics.json key: column title
    "model/params": "params", "model/flops": "MFLOPs", "train/images_per_s": "img/s",
    "time/total_s": "time s", "memory/step_peak_mb": "step peak MB", "memory/peak_mb": "peak MB",
}
SCALE = {"model/flops": 1e-6}
LOWER_IS_BETTER = ("loss", "time/", "memory/", "model/")
FORMATS = ("table", "md", "csv", "json")


@dataclass
class Run:
    dir: Path
    status: str
    metrics: dict[str, Any]
    config: dict[str, Any]  # flat dotted keys
    error: str | None = None

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.metrics.get("seed"))


@dataclass
class Variant:
    label: str
    values: dict[str, Any]
    runs: list[Run]
    metric: str
    scores: list[float] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    mean: float = math.nan
    std: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    min: float = math.nan
    max: float = math.nan
    p: float | None = None
    test: str = ""
    verdict: str = ""
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def unfinished(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs:
            if run.status != "completed":
                counts[run.status] = counts.get(run.status, 0) + 1
        return counts


@dataclass
class Report:
    metric: str
    goal: str  # max | min
    alpha: float
    keys: list[str]  # what names a variant
    also: list[str]  # keys that differ too, determined by `keys`
    common: dict[str, Any]  # overridden values that are the same in every run
    variants: list[Variant]  # best first
    unfinished: list[Run]

    @property
    def level(self) -> str:
        return f"{100 * (1 - self.alpha):g}%"


# ---------------------------------------------------------------- discovery

def find_runs(paths: Sequence[Path | str], strict: bool = True) -> list[Run]:
    """Every run directory under `paths` (one holding metrics.json or a Hydra snapshot).

    strict: a missing path or finding nothing is the user's mistake (ConfigError).
    """
    dirs: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            if strict:
                raise ConfigError(str(path), "does not exist; pass a sweep directory "
                                  "(outputs/multirun/<time>), a run directory, or outputs/")
            continue
        dirs.update(p.parent for p in path.rglob("metrics.json"))
        dirs.update(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
    if strict and not dirs:
        raise ConfigError(" ".join(map(str, paths)), "holds no run directories (none has a metrics.json "
                          "or a .hydra/ snapshot); train some first (sampler train -m ...) or point at "
                          "the outputs/ folder they were written to")
    return [read_run(d) for d in sorted(dirs)]


def _process_gone(process: Any) -> bool:
    """Whether a `running` run's process is known to be dead: only decidable on its own host."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(process["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return False


def read_run(run_dir: Path) -> Run:
    """One run as it stands; a run without readable metrics keeps its Hydra config."""
    metrics: dict[str, Any] = {}
    status, error = "no metrics", "metrics.json was never written (the job stopped before training)"
    path = run_dir / "metrics.json"
    if path.exists():
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
            status, error = str(metrics.get("status", "unknown")), metrics.get("error")
            if status == "running" and _process_gone(metrics.get("process")):
                status, error = "killed", (f"its process (pid {metrics['process']['pid']}) ended without "
                                           "recording an end status: killed (SIGKILL, out of memory) or the "
                                           "machine restarted; `resume=true` reruns it")
        except (OSError, ValueError) as e:
            metrics, status, error = {}, "unreadable", f"metrics.json: {e}"
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else _hydra_config(run_dir)
    flat = flatten(config or {})
    for key in RECORDED:
        if key in metrics:
            flat[key] = metrics[key]
    return Run(run_dir, status, metrics, flat, error)


def _hydra_config(run_dir: Path) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))  # type: ignore
    except Exception:
        return None


# ---------------------------------------------------------------- grouping

def _hashable(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def variant_keys(runs: Sequence[Run], by: Sequence[str] = (),
                 ignore: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The keys that name variants, and the other differing keys they determine.

    Without `by`: every key whose value differs between runs, minus the seed and
    `ignore`. Keys a kept key already determines (sgd's momentum, given
    optim.name) only add noise to a label, so registry names (`*.name`) and keys
    the user overrode are kept first and the rest only when they add a split.
    """
    all_keys = sorted({k for r in runs for k in r.config})
    if by:
        unknown = [k for k in by if k not in all_keys]
        if unknown:
            raise ConfigError("--by", f"no run has the key {', '.join(unknown)}; keys that differ "
                              f"between these runs: {', '.join(differing(runs, all_keys)) or '(none)'}")
        return list(by), []
    skip = set(NOT_VARIANT) | set(ignore)
    diff = [k for k in differing(runs, all_keys) if k not in skip and not k.startswith("hydra.")]
    named = _override_names(runs)
    keys: list[str] = []
    for key in sorted(diff, key=lambda k: (not k.endswith(".name"), k not in named, k)):
        if not _determined(runs, keys, key):
            keys.append(key)
    return sorted(keys), [k for k in diff if k not in keys]


def differing(runs: Sequence[Run], keys: Iterable[str]) -> list[str]:
    """Keys with more than one value; a recorded key a run never got to write does not count."""
    return [k for k in keys if len({_hashable(r.config.get(k)) for r in runs
                                    if k not in RECORDED or r.config.get(k) is not None}) > 1]


def _determined(runs: Sequence[Run], keys: Sequence[str], key: str) -> bool:
    seen: dict[str, str] = {}
    for r in runs:
        given, value = _hashable([r.config.get(k) for k in keys]), _hashable(r.config.get(key))
        if seen.setdefault(given, value) != value:
            return False
    return True


def _override_names(runs: Sequence[Run]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+~") for r in runs for o in r.metrics.get("overrides", [])}


def common_values(runs: Sequence[Run], keys: Sequence[str]) -> dict[str, Any]:
    """The values every run shares among those a user set (overrides) or a run recorded."""
    # a config group override (optim=adamw) shows as the registry name it chose
    names = sorted({n if any(n in r.config for r in runs) else f"{n}.name" for n in _override_names(runs)}
                   | set(RECORDED))
    common = {}
    for key in names:
        values = [r.config[key] for r in runs if key in r.config
                  and (r.config[key] is not None or key not in RECORDED)]
        if key not in keys and key not in NOT_VARIANT and values and not differing(runs, [key]):
            common[key] = values[0]
    return common


def group(runs: Sequence[Run], keys: Sequence[str], metric: str) -> list[Variant]:
    groups: dict[str, Variant] = {}
    for run in runs:
        values = {k: run.config.get(k) for k in keys}
        label = ", ".join(f"{k}={_show(v)}" for k, v in values.items()) or "all runs"
        groups.setdefault(label, Variant(label, values, [], metric)).runs.append(run)
    return list(groups.values())


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(_show, v)) + "]"
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


# ---------------------------------------------------------------- statistics

def summarize(variant: Variant, alpha: float) -> None:
    """n, mean, std, the t-based (1 - alpha) interval, min/max and mean costs."""
    from scipy import stats

    done = [r for r in variant.runs if r.status == "completed" and _number(r.metrics.get(variant.metric))]
    variant.scores = [float(r.metrics[variant.metric]) for r in done]
    variant.seeds = [r.seed for r in done]
    if not done:
        return
    x = np.array(variant.scores)
    variant.mean, variant.min, variant.max = float(x.mean()), float(x.min()), float(x.max())
    if len(x) > 1:
        variant.std = float(x.std(ddof=1))
        half = stats.t.ppf(1 - alpha / 2, len(x) - 1) * variant.std / math.sqrt(len(x))
        variant.ci = (variant.mean - half, variant.mean + half)
    for key in COSTS:
        values = [float(r.metrics[key]) for r in done if _number(r.metrics.get(key))]
        if values:
            variant.cost[key] = float(np.mean(values)) * SCALE.get(key, 1.0)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def paired(a: Variant, b: Variant) -> bool:
    """Both ran exactly the same seeds, each once: compare seed by seed."""
    return len(set(a.seeds)) == a.n and sorted(a.seeds, key=str) == sorted(b.seeds, key=str)


def against_best(best: Variant, other: Variant, alpha: float) -> None:
    """The test, its p-value and the verdict of `other` against the best variant."""
    from scipy import stats

    if best.n < 2 or other.n < 2:
        other.verdict = f"needs more seeds (n={min(best.n, other.n)})"
        return
    if paired(best, other):
        order = {s: i for i, s in enumerate(best.seeds)}
        b = np.array(best.scores)
        o = np.array([s for _, s in sorted(zip(other.seeds, other.scores), key=lambda t: order[t[0]])])
        other.test, diffs = "paired t", b - o
        degenerate = np.ptp(diffs) == 0
        p = None if degenerate else float(stats.ttest_rel(b, o).pvalue)
    else:
        b, o = np.array(best.scores), np.array(other.scores)
        other.test, diffs = "Welch t", np.array([b.mean() - o.mean()])
        degenerate = b.std() == 0 and o.std() == 0
        p = None if degenerate else float(stats.ttest_ind(b, o, equal_var=False).pvalue)
    if p is None:  # no spread at all: the difference is either exactly zero or certain
        p = 1.0 if np.all(diffs == 0) else 0.0
    other.p = p
    other.verdict = "not distinguishable" if p >= alpha else "worse"


def default_metric(runs: Sequence[Run]) -> str:
    """The task's headline: test/miou when every run is a segmentation run, else test/acc."""
    tasks = {r.config.get("task.name") for r in runs if r.config}
    return "test/miou" if tasks == {"segmentation"} else DEFAULT_METRIC


def build_report(runs: Sequence[Run], metric: str | None = None, by: Sequence[str] = (),
                 ignore: Sequence[str] = (), alpha: float = 0.05, goal: str | None = None) -> Report:
    metric = metric or default_metric(runs)
    if not 0 < alpha < 1:
        raise ConfigError("--alpha", f"{alpha} must be between 0 and 1 (0.05 gives 95% intervals)")
    if goal not in (None, "max", "min"):
        raise ConfigError("--goal", f"{goal!r}: choose max or min")
    _check_metric(runs, metric)
    goal = goal or ("min" if any(p in metric for p in LOWER_IS_BETTER) else "max")
    started = [r for r in runs if r.config]  # an unreadable run without a snapshot has no variant
    keys, also = variant_keys(started, by, ignore)
    variants = group(started, keys, metric)
    for v in variants:
        summarize(v, alpha)
    sign = 1 if goal == "max" else -1
    variants.sort(key=lambda v: (v.n == 0, -sign * v.mean if v.n else 0, v.label))
    best = variants[0] if variants else None
    if best is not None and best.n:
        best.verdict = "best" if best.n > 1 else "best mean (n=1: needs more seeds)"
        for v in variants[1:]:
            if v.n:
                against_best(best, v, alpha)
    return Report(metric, goal, alpha, keys, also, common_values(started, keys) if started else {},
                  variants, [r for r in runs if r.status != "completed"])


def _check_metric(runs: Sequence[Run], metric: str) -> None:
    done = [r for r in runs if r.status == "completed"]
    if done and not any(_number(r.metrics.get(metric)) for r in done):
        names = sorted({k for r in done for k, v in r.metrics.items() if _number(v)})
        raise ConfigError("--metric", f"no completed run recorded {metric!r}; choose one of: {', '.join(names)}")


# ---------------------------------------------------------------- output

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


def compare(paths: Sequence[Path], metric: str | None = None, by: Sequence[str] = (),
            ignore: Sequence[str] = (), fmt: str = "table", alpha: float = 0.05, goal: str | None = None,
            plot: bool = False, out: Path | None = None) -> Report:
    """What `sampler compare` does: find, group, test, print (and plot)."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    by = [k for item in by for k in item.split(",") if k]
    report = build_report(find_runs(paths), metric, by, ignore, alpha, goal)
    if fmt == "table":
        print_table(report)
    else:
        print({"md": to_markdown, "csv": to_csv, "json": to_json}[fmt](report), end="")
    if plot:
        from .plots import save_plots

        written = save_plots(report, Path(out or paths[0]))
        print("plots: " + "  ".join(map(str, written)), file=sys.stderr)
    return report
