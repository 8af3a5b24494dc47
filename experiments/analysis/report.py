"""`sampler compare`: the ablation's answer, from run directories alone (DESIGN §4, §7).

Discovery finds every run directory under the given paths and never stops at a
half-written, failed or still-running run: it is shown with its status. A
variant is the set of config values that differ between runs, minus the seed
(DESIGN §7). Per variant: n, mean, standard deviation, a t-based confidence
interval, min and max, and a test against the best variant: a paired t-test
when both ran exactly the same seeds (the seed fixes init, data order and
augmentation, so pairing removes that shared noise), Welch's t-test otherwise.
With fewer than two runs on either side there is no verdict, only a request for
more seeds. A seed counts once per job: a rerun of a job (the same config and
seed) is set aside, never counted as another sample (once_per_job). Cost columns
come from the same metrics.json files. Runs of different tasks or data sets are
refused, never ranked together."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from sampler.blocks.registry import is_number

from ..errors import ConfigError
from ..runs.hparams import LAUNCH_KEYS, NOT_HPARAMS, RESUMABLE_CHANGES
from ..runs.read import RECORDED, Run
from ..runs.sweep import Unstarted
from ..train.tasks import TASKS, headline
from .stats import (difference_ci, holm, paired_t, probability_better, seeds_needed, t_interval,
                    welch_t)

# Keys that never make two runs different variants: the seed is the noise being
# averaged over; the rest say where or how a run ran, not what it ran.
NOT_VARIANT = ("seed", "resume", *NOT_HPARAMS)
COSTS = {  # metrics.json key: column title
    "model/params": "params", "model/flops": "MFLOPs", "train/images_per_s": "img/s",
    "time/total_s": "time s", "memory/step_peak_mb": "step peak MB", "memory/peak_mb": "peak MB",
}
SCALE = {"model/flops": 1e-6}
LOWER_IS_BETTER = ("loss", "time/", "memory/", "model/", "epochs_to_")


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
    p: float | None = None  # against the reference, Holm-corrected when there are several tests
    p_raw: float | None = None  # the same test's p before the correction
    test: str = ""
    verdict: str = ""
    diff: float | None = None  # mean(this) - mean(reference), paired seed by seed when they share seeds
    diff_ci: tuple[float, float] | None = None
    p_better: float | None = None  # how often this beat the reference: per seed when paired, else per pair of runs
    cost: dict[str, float] = field(default_factory=dict)
    counted: list[Run] = field(default_factory=list)  # the completed runs behind `scores`, one per job
    reruns: list[Run] = field(default_factory=list)  # completed runs of a job already counted: set aside
    left_out: list[Run] = field(default_factory=list)  # completed runs whose metric is no finite number

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
    reference: str = "best"  # what the verdicts compare against: the best variant or --baseline's label
    corrected: int = 0  # how many tests Holm's correction spans (0: one test or none, nothing corrected)
    effect: float | None = None  # --effect, in the metric's units
    power: float = 0.8
    seeds_needed: int | None = None  # per variant, to separate `effect` at alpha with `power`
    needed_spread: float | None = None  # the per-seed spread that estimate used
    unstarted: list[Unstarted] = field(default_factory=list)  # per sweep dir compared: jobs it never started

    @property
    def level(self) -> str:
        return f"{100 * (1 - self.alpha):g}%"

    @property
    def reruns(self) -> list[Run]:
        return [r for v in self.variants for r in v.reruns]

    @property
    def left_out(self) -> list[Run]:
        return [r for v in self.variants for r in v.left_out]



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


def short_labels(keys: Sequence[str], variants: Sequence[Variant]) -> tuple[str, list[str]]:
    """The variant column's title and each variant's name under it, shared prefix moved up.

    One key: the key is the title and the value the name (`model.pool` over `max`).
    Several: their common dotted prefix is the title (`model` over `act=gelu, pool=max`);
    `variant` when they share none. Nothing is cut: every value is named in full.
    """
    if not keys:
        return "variant", [v.label for v in variants]
    if len(keys) == 1:
        return keys[0], [_show(v.values.get(keys[0])) for v in variants]
    parts = [k.split(".") for k in keys]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    prefix = ".".join(parts[0][:shared])
    cut = len(prefix) + 1 if prefix else 0
    return prefix or "variant", [", ".join(f"{k[cut:]}={_show(v.values.get(k))}" for k in keys) for v in variants]


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(_show, v)) + "]"
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


# ---------------------------------------------------------------- per variant

def summarize(variant: Variant, alpha: float) -> None:
    """n, mean, std, the t-based (1 - alpha) interval, min/max and mean costs, each job once."""
    completed = [r for r in variant.runs if r.status == "completed"]
    variant.left_out = [r for r in completed if not _number(r.metrics.get(variant.metric))]
    done, variant.reruns = once_per_job([r for r in completed if r not in variant.left_out])
    variant.counted = done
    variant.scores = [float(r.metrics[variant.metric]) for r in done]
    variant.seeds = [r.seed for r in done]
    if not done:
        return
    x = np.array(variant.scores)
    variant.mean, variant.min, variant.max = float(x.mean()), float(x.min()), float(x.max())
    if len(x) > 1:
        variant.std = float(x.std(ddof=1))
        variant.ci = t_interval(x, alpha)
    for key in COSTS:
        values = [float(r.metrics[key]) for r in done if _number(r.metrics.get(key))]
        if values:
            variant.cost[key] = float(np.mean(values)) * SCALE.get(key, 1.0)


def once_per_job(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """The runs that count, in their order, and the reruns set aside.

    A job is a config and a seed: runs that agree on every config key (the recorded
    device and precision too) and the seed, apart from keys that change nothing
    computed (RESUMABLE_CHANGES: paths, progress, threads; LAUNCH_KEYS), are one job run
    again, whatever code version ran it. The seed fixes init, data order and
    augmentation, so a rerun repeats its numbers up to hardware noise: counting it
    again would shrink the interval for nothing, and its repeated seed would turn a
    paired test into Welch's. The newest run counts (by `finished_at`, then by
    directory, whose names carry the launch time).

    Runs that differ in any other key stay separate samples, even when `--by` or
    `--ignore` put them in one variant with the same seed (`--ignore trainer.epochs`
    pools 1- and 2-epoch runs): they measured different things, and the test is then
    Welch's, since the variant's seeds repeat.
    """
    def job(run: Run) -> str:
        return _hashable([run.seed, {k: v for k, v in run.config.items()
                                     if k not in RESUMABLE_CHANGES and k not in LAUNCH_KEYS}])

    newest = {job(r): r for r in sorted(runs, key=lambda r: (str(r.metrics.get("finished_at") or ""), str(r.dir)))}
    kept = set(map(id, newest.values()))
    return [r for r in runs if id(r) in kept], [r for r in runs if id(r) not in kept]


def goal_of(metric: str) -> str:
    """max or min: a task's headline says it; otherwise losses, times and costs are lower-better."""
    for name in TASKS:
        h = headline(name)
        if metric in (h.val, h.val_best, h.test):
            return h.goal
    return "min" if any(p in metric for p in LOWER_IS_BETTER) else "max"


FRACTIONS = ("acc", "iou", "f1")  # a metric whose name ends so is a 0-1 fraction (acc, miou, boundary_f1)
NON_NEGATIVE = ("loss", "time/", "memory/", "model/", "images_per_s")


def is_fraction(metric: str) -> bool:
    """acc, pixel_acc, miou, boundary_f1, iou/<class>: shown in %, bounded by [0, 1]."""
    parts = metric.lower().split("/")
    return parts[-1].endswith(FRACTIONS) or (len(parts) > 1 and parts[-2].endswith(FRACTIONS))


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take by definition: no interval is shown reaching past them."""
    if is_fraction(metric):
        return 0.0, 1.0
    if any(p in metric for p in NON_NEGATIVE):
        return 0.0, math.inf
    return -math.inf, math.inf


def _number(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def why_left_out(run: Run, metric: str) -> str:
    """Why a completed run's `metric` is no score: metrics.json writes a NaN or infinite figure as null."""
    if metric not in run.metrics:
        return "not recorded"
    value = run.metrics[metric]
    if value is None:
        return "null: NaN or infinite"
    return f"{value!r}: not finite" if is_number(value) else f"{value!r}: not a number"


def paired(a: Variant, b: Variant) -> bool:
    """Both ran exactly the same seeds, each once: compare seed by seed."""
    return len(set(a.seeds)) == a.n and sorted(a.seeds, key=str) == sorted(b.seeds, key=str)


def against(reference: Variant, other: Variant, alpha: float, goal: str) -> None:
    """The test of `other` against the reference variant: its p-value, the difference of
    the means with its CI, how often it beat the reference, and the verdict."""
    if reference.n < 2 or other.n < 2:
        other.verdict = f"needs more seeds (n={min(reference.n, other.n)})"
        return
    both = paired(reference, other)
    ref, scores = reference.scores, other.scores
    if both:
        order = {s: i for i, s in enumerate(reference.seeds)}
        scores = [s for _, s in sorted(zip(other.seeds, other.scores), key=lambda t: order[t[0]])]
        other.test, other.p_raw = "paired t", paired_t(ref, scores)
    else:
        other.test, other.p_raw = "Welch t", welch_t(ref, scores)
    other.p = other.p_raw
    diff, low, high = difference_ci(scores, ref, both, alpha)
    other.diff, other.diff_ci = diff, (low, high)
    other.p_better = probability_better(scores, ref, both) if goal == "max" else probability_better(ref, scores, both)
    _verdict(other, alpha, goal)


def _verdict(v: Variant, alpha: float, goal: str) -> None:
    if v.p is None or v.diff is None:
        return
    ahead = v.diff > 0 if goal == "max" else v.diff < 0
    v.verdict = "not distinguishable" if v.p >= alpha else ("better" if ahead else "worse")


def _correct(tested: list[Variant], alpha: float, goal: str) -> int:
    """Holm's correction over the tests against the reference (issue 14: with more than two
    variants, uncorrected tests find a 'difference' by chance far more often than alpha)."""
    if len(tested) < 2:
        return 0
    for v, p in zip(tested, holm([v.p_raw for v in tested])):
        v.p = p
        _verdict(v, alpha, goal)
    return len(tested)


def _seeds_needed(reference: Variant, others: list[Variant], effect: float, alpha: float,
                  power: float) -> tuple[int | None, float | None]:
    """From the spread seen so far: the largest per-seed std of the paired differences (or of
    the scores, unpaired) among the tested variants."""
    spreads, pairing = [], True
    for v in others:
        if v.n < 2 or reference.n < 2:
            continue
        if paired(reference, v) and v.diff_ci is not None:
            order = {s: i for i, s in enumerate(reference.seeds)}
            scores = [s for _, s in sorted(zip(v.seeds, v.scores), key=lambda t: order[t[0]])]
            spreads.append(float(np.std(np.subtract(scores, reference.scores), ddof=1)))
        else:
            pairing = False
            spreads.append(max(v.std, reference.std))
    if not spreads:
        return None, None
    spread = max(spreads)
    return seeds_needed(spread, abs(effect), alpha, power, paired=pairing), spread


def default_metric(runs: Sequence[Run]) -> str:
    """The headline test metric the runs' task declares (train/tasks.py); classification's
    when the runs do not say (runs of two tasks never get here: check_one_kind)."""
    tasks = {r.config.get("task.name") for r in runs if r.config}
    name = next(iter(tasks)) if len(tasks) == 1 else None
    return headline(name if name in TASKS else "classification").test


def build_report(runs: Sequence[Run], metric: str | None = None, by: Sequence[str] = (),
                 ignore: Sequence[str] = (), alpha: float = 0.05, goal: str | None = None,
                 baseline: str | None = None, effect: float | None = None, power: float = 0.8) -> Report:
    """The comparison: variants best first, each tested against the best (or `baseline`,
    a variant's label or value), Holm-corrected when there are several tests; with
    `effect` (in the metric's units), how many seeds would separate such a difference."""
    check_one_kind(runs)
    metric = metric or default_metric(runs)
    if not 0 < alpha < 1:
        raise ConfigError("--alpha", f"{alpha} must be between 0 and 1 (0.05 gives 95% intervals)")
    if goal not in (None, "max", "min"):
        raise ConfigError("--goal", f"{goal!r}: choose max or min")
    _check_metric(runs, metric)
    goal = goal or goal_of(metric)
    started = [r for r in runs if r.config]  # an unreadable run without a snapshot has no variant
    keys, also = variant_keys(started, by, ignore)
    variants = group(started, keys, metric)
    for v in variants:
        summarize(v, alpha)
    sign = 1 if goal == "max" else -1
    variants.sort(key=lambda v: (v.n == 0, -sign * v.mean if v.n else 0, v.label))
    if not 0 < power < 1:
        raise ConfigError("--power", f"{power} must be between 0 and 1 (0.8 is usual)")
    reference = _reference(variants, keys, baseline)
    tested: list[Variant] = []
    if reference is not None and reference.n:
        if baseline is None:
            reference.verdict = "best" if reference.n > 1 else "best mean (n=1: needs more seeds)"
        else:
            reference.verdict = "baseline"
        for v in variants:
            if v is not reference and v.n:
                against(reference, v, alpha, goal)
                if v.p_raw is not None:
                    tested.append(v)
    corrected = _correct(tested, alpha, goal)
    report = Report(metric, goal, alpha, keys, also, common_values(started, keys) if started else {},
                    variants, [r for r in runs if r.status != "completed"],
                    reference="best" if baseline is None else baseline, corrected=corrected, effect=effect,
                    power=power)
    if effect is not None and reference is not None:
        report.seeds_needed, report.needed_spread = _seeds_needed(reference, tested, effect, alpha, power)
    return report


def _reference(variants: list[Variant], keys: Sequence[str], baseline: str | None) -> Variant | None:
    """The best variant, or the one `baseline` names by its label or by its value alone."""
    if not variants:
        return None
    if baseline is None:
        return variants[0]
    _, labels = short_labels(keys, variants)
    for v, short in zip(variants, labels):
        if baseline in (v.label, short):
            return v
    raise ConfigError("--baseline", f"{baseline!r} names no variant; choose one of: {', '.join(labels)}")


KINDS = {"task.name": "tasks", "data.name": "data sets"}  # never ranked together


def check_one_kind(runs: Sequence[Run]) -> None:
    """Refuse runs of different tasks or data sets: their numbers do not measure the same thing."""
    for key, what in KINDS.items():
        found: dict[str, list[Run]] = {}
        for r in runs:
            if r.config.get(key) is not None:
                found.setdefault(_show(r.config[key]), []).append(r)
        if len(found) > 1:
            folders = {name: _folder(rs) for name, rs in found.items()}
            apart = len(set(folders.values())) == len(folders)  # else: point at a run of each
            where = "; ".join(f"{name}: {len(rs)} run{'s' if len(rs) > 1 else ''} "
                              + (f"under {folders[name]}" if apart else f"such as {rs[0].dir}")
                              for name, rs in sorted(found.items()))
            raise ConfigError("paths", f"these runs mix {what} ({key} = {', '.join(sorted(found))}), whose "
                              f"{'metrics' if key == 'task.name' else 'scores'} cannot be ranked together; "
                              f"compare them separately, passing the sweep or run directories of one kind "
                              f"at a time ({where})")


def _folder(runs: Sequence[Run]) -> str:
    dirs = [str(r.dir) for r in runs]
    return dirs[0] if len(dirs) == 1 else os.path.commonpath(dirs)


def _check_metric(runs: Sequence[Run], metric: str) -> None:
    done = [r for r in runs if r.status == "completed"]
    if done and not any(_number(r.metrics.get(metric)) for r in done):
        names = sorted({k for r in done for k, v in r.metrics.items() if _number(v)})
        raise ConfigError("--metric", f"no completed run recorded {metric!r}; choose one of: {', '.join(names)}")
