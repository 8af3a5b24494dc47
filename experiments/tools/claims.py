"""`sampler claims`: the course notes' claims about pooling, BatchNorm, in-place ReLU and
upsampling, each measured and judged, written to docs/claims.md.

Two kinds of evidence:
- computed here, exactly: shapes, FLOPs and receptive fields of the model, activation
  memory, the interpolation modes and pools applied to real images. No seeds involved;
- read from the sweeps of the claim presets (configs/experiment/), seed by seed, with the
  statistics of `sampler compare`: paired t-tests and intervals of the seed-by-seed
  differences, Holm's correction when one row tests several variants.

Verdicts: **holds**, **fails**, **depends** (the row says on what), or **undecided** when
the seeds cannot separate the variants (fewer than MIN_SEEDS, or an interval that spans
zero: the row then says about how many seeds would). A claim whose sweep is missing says
which command makes it."""
from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from sampler.blocks import build_model
from sampler.blocks.registry import is_number

from ..analysis.stats import difference_ci, holm, paired_t, seeds_needed, t_interval
from ..errors import ConfigError
from ..runs.provenance import git_state, hardware, versions
from ..runs.read import Run, find_runs
from ..train.cost import activation_memory
from .inspect import layer_table

MIN_SEEDS = 3
ALPHA = 0.05
CONVERGED = 0.25  # val/acc_best at or above 2.5x chance: the run learned (bn_lr_tolerance)


@dataclass
class Row:
    claim: str
    verdict: str  # holds | fails | depends: ... | undecided: ... | not measured: ...
    measured: str  # one line for the table
    details: list[str] = field(default_factory=list)  # the section below the table
    commands: list[str] = field(default_factory=list)
    evidence: str = "computed"  # where the figures come from: computed | the sweep's runs
    deterministic: str = "exact: no randomness"


@dataclass
class Context:
    sweeps: dict[str, list[Run]]  # preset name -> the runs of its newest sweep
    data_root: Path | None
    device: torch.device = torch.device("cpu")


# ---------------------------------------------------------------- finding the sweeps

def experiment_of(run: Run) -> str | None:
    for override in run.metrics.get("overrides") or []:
        if isinstance(override, str) and override.startswith("experiment="):
            return override.split("=", 1)[1]
    return None


def find_sweeps(root: Path) -> dict[str, list[Run]]:
    """The newest sweep of each preset under `root`: its runs, keyed by the preset's name
    (the `experiment=` override). Sweep folders are named by their start time, so the
    last one in sorted order is the newest."""
    by_sweep: dict[Path, list[Run]] = {}
    for run in find_runs([root], strict=False):
        by_sweep.setdefault(run.dir.parent, []).append(run)
    newest: dict[str, list[Run]] = {}
    for sweep_dir in sorted(by_sweep):
        names = {experiment_of(r) for r in by_sweep[sweep_dir]} - {None}
        if len(names) == 1:
            newest[names.pop()] = by_sweep[sweep_dir]  # type: ignore[index]
    return newest


# ---------------------------------------------------------------- statistics

def by_seed(runs: Iterable[Run], metric: str, **where: Any) -> dict[Any, float]:
    """metric per seed over the completed runs whose config matches `where` (dotted keys
    written with __ for the dots)."""
    out: dict[Any, float] = {}
    for run in runs:
        if run.status != "completed":
            continue
        if any(not _same(run.config.get(k.replace("__", ".")), v) for k, v in where.items()):
            continue
        value = run.metrics.get(metric)
        if is_number(value):
            out[run.seed] = float(value)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b)
    return str(a) == str(b)


@dataclass
class Paired:
    """a − b over the seeds both have: mean, its t-interval and the paired t-test's p."""

    n: int
    diff: float
    lo: float
    hi: float
    p: float
    std: float

    def needed(self) -> int | None:
        return seeds_needed(self.std, abs(self.diff), ALPHA) if self.diff and self.std > 0 else None


def paired(a: dict[Any, float], b: dict[Any, float]) -> Paired | None:
    seeds = sorted(set(a) & set(b), key=str)
    if len(seeds) < 2:
        return None
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    diff, lo, hi = difference_ci(x, y, paired=True, alpha=ALPHA)
    std = statistics.stdev([p - q for p, q in zip(x, y)])
    return Paired(len(seeds), diff, lo, hi, paired_t(x, y), std)


def mean_ci(values: Sequence[float], scale: float = 100.0, unit: str = "%", digits: int = 2) -> str:
    """mean ± the 95% t-interval's half-width, in `unit` (percent by default)."""
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}{unit} (n=1)"
    lo, hi = t_interval(values, ALPHA)
    return f"{mean:.{digits}f} ± {(hi - lo) / 2 * scale:.{digits}f}{unit} (n={len(values)})"


def show_diff(d: Paired, scale: float = 100.0, unit: str = " points") -> str:
    return (f"{d.diff * scale:+.2f}{unit} [95% CI {d.lo * scale:+.2f}, {d.hi * scale:+.2f}], paired t p={d.p:.3g}, "
            f"n={d.n}")


def direction(d: Paired | None, p: float | None = None) -> str:
    """`up` or `down` when the difference is clear at ALPHA (p Holm-corrected if given),
    `too few` below MIN_SEEDS, else `unclear`."""
    if d is None or d.n < MIN_SEEDS:
        return "too few"
    p = d.p if p is None else p
    if p < ALPHA:
        return "up" if d.diff > 0 else "down"
    return "unclear"


def undecided(d: Paired | None, what: str) -> str:
    if d is None or d.n < MIN_SEEDS:
        return f"undecided: too few seeds for {what} (n={0 if d is None else d.n}, need {MIN_SEEDS})"
    need = d.needed()
    more = f"; about {need} seeds would separate a difference of this size" if need else ""
    return f"undecided: no clear difference in {what} at n={d.n}{more}"


def determinism(runs: Sequence[Run]) -> str:
    flags = {str(r.metrics.get("deterministic")) for r in runs}
    if flags == {"True"}:
        return f"yes: all {len(runs)} runs with trainer.deterministic=true"
    if flags == {"False"}:
        return f"no: {len(runs)} runs with torch's default algorithms"
    return f"mixed: {', '.join(sorted(flags))}"


def conditions(runs: Sequence[Run]) -> str:
    """What a sweep ran on: data sizes, epochs, widths, when, at which commit, on what."""
    m = runs[0].metrics
    c = {k: v if all(str(r.config.get(k)) == str(v) for r in runs) else "varied" for k, v in runs[0].config.items()}
    hw = m.get("hardware") or {}
    started = min(str(r.metrics.get("started_at", "")) for r in runs)[:10]
    git = m.get("git") or {}
    commit = (git.get("commit") or "?")[:7] + (" + uncommitted changes" if git.get("dirty") else "")
    parts = [f"{c.get('data.name')}", f"{_n(c.get('data.subset')) or 'varied'} train images" if c.get("data.subset") else
             "all train images", f"{_n(c.get('data.test_size')) or 'all'} test images",
             f"{c.get('trainer.epochs')} epochs", f"widths {c.get('model.widths')}", f"batch {c.get('trainer.batch_size')}",
             f"{m.get('precision')}", f"run {started} at {commit}"]
    if hw:
        parts.append(f"on {hw.get('cpu')} x{hw.get('cores')}")
    return ", ".join(str(p) for p in parts if p)


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ""


def _overrides(run: Run) -> list[str]:
    """A run's overrides as a user types them: Hydra records booleans as True/False."""
    out = []
    for o in run.metrics.get("overrides") or []:
        key, _, value = str(o).partition("=")
        out.append(f"{key}={value.lower() if value in ('True', 'False') else value}")
    return out


def sweep_command(preset: str, runs: Sequence[Run]) -> str:
    """The command that made the sweep: the preset and the overrides every run shares
    (how-keys such as trainer.threads left out)."""
    shared = set(_overrides(runs[0]))
    for r in runs[1:]:
        shared &= set(_overrides(r))
    extra = sorted(o for o in shared if not o.startswith(("experiment=", "trainer.threads=", "trainer.progress=")))
    swept = sorted({o.split("=", 1)[0] for r in runs for o in _overrides(r)} - {o.split("=", 1)[0] for o in shared})
    # Overrides that vary (a sweep's own list on the command line) are read from the runs.
    values = {k: sorted({o.split("=", 1)[1] for r in runs for o in _overrides(r) if o.startswith(k + "=")},
                        key=_sort_key) for k in swept}
    default_axes = _preset_axes(preset)
    listed = [f"{k}={','.join(v)}" for k, v in values.items() if k not in default_axes or v != default_axes[k]]
    return " ".join(["sampler train -m", f"experiment={preset}", *extra, *listed]).replace("  ", " ")


def _sort_key(v: str) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def _preset_axes(preset: str) -> dict[str, list[str]]:
    """The sweep axes a preset file lists (hydra.sweeper.params), as sorted value lists."""
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / "configs" / "experiment" / f"{preset}.yaml"
    try:
        params = OmegaConf.load(path).get("hydra", {}).get("sweeper", {}).get("params", {})
    except OSError:
        return {}
    return {k: sorted((str(v).split(",")), key=_sort_key) for k, v in params.items()}


def missing(claim: str, preset: str, metric: str = "") -> Row:
    return Row(claim, "not measured", f"no sweep of experiment={preset} found",
               [f"Run `sampler train -m experiment={preset}`, then `sampler claims` again."],
               [f"sampler train -m experiment={preset}"], evidence="none", deterministic="—")


SweepClaim = Callable[[Context, str, list[Run]], Row]


def from_sweep(preset: str, claim: str) -> Callable[[SweepClaim], Callable[[Context], Row]]:
    """A claim measured by the newest sweep of `preset`: the function gets the claim's text and
    that sweep's runs; without a sweep the row says "not measured" and gives the command."""
    def wrap(fn: SweepClaim) -> Callable[[Context], Row]:
        @functools.wraps(fn)
        def row(ctx: Context) -> Row:
            runs = ctx.sweeps.get(preset)
            return fn(ctx, claim, runs) if runs else missing(claim, preset)
        return row
    return wrap


# ---------------------------------------------------------------- pooling

def _encoder_pool(name: str) -> bool:
    """A stage's pool in a layer table (`encoder.<stage>.<unit>.pool`), not the head's
    global pool: the claims are about the 2x2 pools between stages."""
    return name.startswith("encoder.") and name.endswith(".pool")


def claim_pool_cost(ctx: Context) -> Row:
    claim = "2x2 stride-2 pooling halves H and W and cuts the next conv's cost by about 75%"
    x = torch.zeros(1, 3, 32, 32)
    pooled, flat = layer_table(build_model(), x), layer_table(build_model(pool="none"), x)
    shapes = [r["shape"][-2:] for r in pooled if _encoder_pool(r["name"])]
    flat_flops = {r["name"]: r["flops"] for r in flat}
    convs = [(r["name"], r["flops"], flat_flops[r["name"]]) for r in pooled
             if r["name"].endswith(".conv") and not r["name"].startswith("encoder.0.")]
    # The conv of stage k runs after k pools: 0.25^k of its cost at full size, so each pool cuts
    # the conv after it to 0.25 of what it would cost without that pool.
    per_pool = [(with_pool / without) ** (1 / int(name.split(".")[1])) for name, with_pool, without in convs]
    halved = all(h2 * 2 == h1 and w2 * 2 == w1 for (h1, w1), (h2, w2) in zip([(32, 32), *shapes], shapes))
    holds = halved and all(abs(r - 0.25) < 0.0025 for r in per_pool)
    details = ["The default stack (`sampler inspect` and `sampler inspect model.pool=none`), 32x32 input: "
               f"the pools give {' → '.join('x'.join(map(str, s)) for s in [(32, 32), *shapes])}.",
               "Each later conv's FLOPs with the pools before it, against the same conv in the stack without "
               "pools (stage k's conv follows k pools, so it should cost 0.25^k as much): " +
               "; ".join(f"{name} {a / 1e6:.2f} vs {b / 1e6:.2f} MFLOPs = {a / b:.4f} = 0.25^{name.split('.')[1]}"
                         f"{'' if abs(a / b - 0.25 ** int(name.split('.')[1])) < 1e-3 else ' (NOT)'}"
                         for name, a, b in convs) + "."]
    runs = ctx.sweeps.get("pool_shift_invariance", [])
    speed = {p: list(by_seed(runs, "train/images_per_s", model__pool=p).values()) for p in ("max", "none")}
    if speed["max"] and speed["none"]:
        details.append(f"Measured end to end (pool_shift_invariance, half widths): {statistics.fmean(speed['max']):,.0f} "
                       f"img/s with max pooling against {statistics.fmean(speed['none']):,.0f} without: "
                       f"{statistics.fmean(speed['max']) / statistics.fmean(speed['none']):.1f}x (wall time, so "
                       "other load on the machine counts).")
    return Row(claim, "holds" if holds else "fails",
               f"H, W halved at every pool; each pool leaves the next conv {100 * statistics.fmean(per_pool):.1f}% "
               f"of its FLOPs ({100 * (1 - statistics.fmean(per_pool)):.1f}% less; exact count, {len(per_pool)} convs)",
               details,
               ["sampler inspect", "sampler inspect model.pool=none"])


def claim_receptive_field(ctx: Context) -> Row:
    claim = "Pooling grows the receptive field"
    x = torch.zeros(1, 3, 32, 32)
    rf = {pool: [r for r in layer_table(build_model(pool=pool), x) if r["rf"] is not None][-1]["rf"][0]
          for pool in ("max", "none")}
    per_stage = [(r["name"], r["rf"][0]) for r in layer_table(build_model(), x) if _encoder_pool(r["name"])]
    details = [f"Theoretical receptive field of the encoder's output, default stack: {rf['max']} px with four 2x2 "
               f"max pools, {rf['none']} px without (four 3x3 convs: 1 + 4 x 2). After each pool: " +
               ", ".join(f"{n} {v} px" for n, v in per_stage) + "."]
    return Row(claim, "holds" if rf["max"] > rf["none"] else "fails",
               f"{rf['max']} px with pools vs {rf['none']} px without (exact)", details,
               ["sampler inspect", "sampler inspect model.pool=none"])


@from_sweep("pool_shift_invariance", "Pooling gives some translation invariance")
def claim_shift_invariance(ctx: Context, claim: str, runs: list[Run]) -> Row:
    metric = "test/shift_consistency"
    none = by_seed(runs, metric, model__pool="none")
    pools = ("max", "avg", "conv")
    diffs = {p: paired(by_seed(runs, metric, model__pool=p), none) for p in pools}
    tested = [p for p in pools if diffs[p] is not None]
    corrected = dict(zip(tested, holm([diffs[p].p for p in tested]))) if tested else {}
    ways = {p: direction(diffs[p], corrected.get(p)) for p in pools}
    details = [f"Consistency: the share of test images whose predicted class survives a random shift of 1-4 px "
               f"(Zhang 2019), paired by seed against no pooling; p Holm-corrected over {len(tested)} tests."]
    for p in (*pools, "none"):
        cons, acc = by_seed(runs, metric, model__pool=p), by_seed(runs, "test/acc", model__pool=p)
        shifted = by_seed(runs, "test/shift_acc_4px", model__pool=p)
        line = f"- model.pool={p}: consistency {mean_ci(list(cons.values()))}, test acc {mean_ci(list(acc.values()))}"
        if shifted:
            line += f", acc with 4 px shifts {mean_ci(list(shifted.values()))}"
        if p in diffs and diffs[p]:
            line += f"; vs none {show_diff(diffs[p])} (Holm p={corrected[p]:.3g})"
        details.append(line)
    if any(w == "too few" for w in ways.values()):
        verdict = undecided(next(diffs[p] for p in pools if ways[p] == "too few"), "consistency")
    elif all(w == "up" for w in ways.values()):
        verdict = "holds"
    elif any(w == "up" for w in ways.values()):
        verdict = ("depends: on the pool; more consistent than no pooling: " +
                   ", ".join(p for p in pools if ways[p] == "up") + "; not: " +
                   ", ".join(p for p in pools if ways[p] != "up"))
    elif any(w == "down" for w in ways.values()):
        verdict = ("fails: no pool made the net more consistent than no pooling at the same depth (whose head "
                   "still averages the whole map); less consistent: " +
                   ", ".join(p for p in pools if ways[p] == "down"))
    else:
        verdict = undecided(diffs[pools[0]], "consistency")
    best = max(pools, key=lambda p: diffs[p].diff if diffs[p] else -1)
    measured = (f"consistency vs no pool: " + ", ".join(f"{p} {diffs[p].diff * 100:+.1f}" for p in pools if diffs[p])
                + f" points (n={diffs[best].n if diffs[best] else 0}, trained without translation augmentation)")
    details.append("Conditions: " + conditions(runs) + ". The no-pool net still ends in the linear head's global "
                   "average pool, itself a pooling over the whole map.")
    return Row(claim, verdict, measured, details,
               [sweep_command("pool_shift_invariance", runs),
                "sampler compare outputs/multirun/<time> --metric test/shift_consistency --baseline model.pool=none"],
               "sweep", determinism(runs))


def _luma(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean absolute difference of neighbouring pixels, over the image's std:
    how much of its variation is fine detail (scale-free)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
    return (dx + dy) / 2 / x.std((1, 2, 3)).clamp(min=1e-6)


def claim_max_sharp(ctx: Context) -> Row:
    claim = "Max pooling keeps sharp features; average pooling smooths"
    images = _test_images(ctx, "cifar10", 2000)
    if images is None:
        return Row(claim, "not measured", "needs CIFAR-10 (data.root)", ["Point --data at a CIFAR-10 copy."],
                   ["sampler claims --data DIR"], evidence="none", deterministic="—")
    x = _luma(images)
    sharp = {"max": _tv(F.max_pool2d(x, 2)), "avg": _tv(F.avg_pool2d(x, 2)), "subsample": _tv(x[..., ::2, ::2])}
    ratio_max_avg = (sharp["max"] / sharp["avg"]).tolist()
    ratio_avg_sub = (sharp["avg"] / sharp["subsample"]).tolist()
    ratio_max_sub = (sharp["max"] / sharp["subsample"]).tolist()
    # Features: rectified oriented edge responses (Sobel, both signs), sparse like post-ReLU maps;
    # a pool that keeps sharp features keeps their peaks.
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T, -sobel, -sobel.T])[:, None]
    edges = F.relu(F.conv2d(x, kernels, padding=1))
    peak = {name: (fn(edges).flatten(1).quantile(0.99, dim=1) / edges.flatten(1).quantile(0.99, dim=1).clamp(min=1e-6))
            for name, fn in (("max", lambda e: F.max_pool2d(e, 2)), ("avg", lambda e: F.avg_pool2d(e, 2)))}
    peak_max, peak_avg = peak["max"].tolist(), peak["avg"].tolist()
    keeps = t_interval(ratio_max_avg, ALPHA)[0] > 1 and t_interval([a - b for a, b in zip(peak_max, peak_avg)],
                                                                    ALPHA)[0] > 0
    smooths = t_interval(ratio_avg_sub, ALPHA)[1] < 1 and t_interval(peak_avg, ALPHA)[1] < 1
    details = [f"{len(x):,} CIFAR-10 test images (luminance, 32x32) pooled 2x2 with stride 2. Sharpness: the mean "
               "absolute difference of neighbouring pixels over the image's standard deviation; the reference is "
               "plain subsampling (every second pixel: no filtering at all).",
               f"- max / avg sharpness, per image: {mean_ci(ratio_max_avg, 1, 'x', 3)}",
               f"- avg / subsampled: {mean_ci(ratio_avg_sub, 1, 'x', 3)} (below 1: average pooling low-pass filters)",
               f"- max / subsampled: {mean_ci(ratio_max_sub, 1, 'x', 3)} (max pooling loses some image detail too)",
               "Edge features (Sobel responses in 4 directions, rectified like a ReLU output): the pooled map's 99th "
               "percentile over the input map's, per image:",
               f"- max pooling {mean_ci(peak_max, 100, '%')}, average pooling {mean_ci(peak_avg, 100, '%')} (above "
               "100%: max pooling keeps each window's strongest response, so the top of the distribution rises; "
               "average pooling dilutes an edge with its flat neighbours)"]
    runs = ctx.sweeps.get("quickstart")
    commands = ["sampler claims  (computed: experiments/tools/claims.py, claim_max_sharp)"]
    if runs:
        d = paired(by_seed(runs, "test/acc", model__pool="max"), by_seed(runs, "test/acc", model__pool="avg"))
        if d:
            details.append(f"Accuracy, for context (quickstart): max − avg {show_diff(d)}. {conditions(runs)}.")
            commands.append(sweep_command("quickstart", runs))
    verdict = "holds" if keeps and smooths else "fails"
    return Row(claim, verdict, f"edge peaks kept: max {100 * statistics.fmean(peak_max):.0f}%, avg "
               f"{100 * statistics.fmean(peak_avg):.0f}%; image sharpness max/avg {statistics.fmean(ratio_max_avg):.2f}x "
               f"({len(x):,} images)", details, commands,
               "computed on real images")


# ---------------------------------------------------------------- BatchNorm

@from_sweep("bn_convergence", "BatchNorm speeds convergence")
def claim_bn_convergence(ctx: Context, claim: str, runs: list[Run]) -> Row:
    level = runs[0].config.get("task.converge_at", 0.6)
    key = f"val/epochs_to_{round(100 * level)}"
    auc = {n: by_seed(runs, "val/acc_auc", model__norm=n) for n in ("batch", "none")}
    d = paired(auc["batch"], auc["none"])
    details = [f"Area under the validation accuracy curve per epoch (val/acc_auc), and the first epoch at which "
               f"validation accuracy reached {100 * level:.0f}% ({key}; — = never in "
               f"{runs[0].config.get('trainer.epochs')} epochs):"]
    reached = {}
    for n in ("batch", "none"):
        epochs = {r.seed: r.metrics.get(key) for r in runs if r.status == "completed" and r.config.get("model.norm") == n}
        reached[n] = epochs
        shown = ", ".join(f"seed {s}: {e if e is not None else '—'}" for s, e in sorted(epochs.items(), key=str))
        details.append(f"- model.norm={n}: AUC {mean_ci(list(auc[n].values()))}; {key}: {shown}")
    if d:
        details.append(f"- batch − none AUC: {show_diff(d)}")
    details.append("Conditions: " + conditions(runs) + ".")
    way = direction(d)
    verdict = {"up": "holds", "down": "fails"}.get(way) or undecided(d, "the area under the val curve")
    measured = f"val AUC batch − none {d.diff * 100:+.1f} points" if d else "—"
    n_reached = {n: sum(e is not None for e in reached[n].values()) for n in reached}
    measured += (f"; reached {100 * level:.0f}%: batch {n_reached['batch']}/{len(reached['batch'])}, none "
                 f"{n_reached['none']}/{len(reached['none'])} seeds")
    return Row(claim, verdict, measured, details,
               [sweep_command("bn_convergence", runs),
                "sampler compare outputs/multirun/<time> --metric val/acc_auc"], "sweep", determinism(runs))


@from_sweep("bn_lr_tolerance", "BatchNorm allows higher learning rates")
def claim_bn_lr(ctx: Context, claim: str, runs: list[Run]) -> Row:
    lrs = sorted({float(r.config["optim.lr"]) for r in runs})
    details = [f"A run converges when it completes (not diverged) with val/acc_best >= {100 * CONVERGED:.0f}% "
               "(2.5x chance). Per peak lr, the seeds that converged and the mean val/acc_best of the completed runs:"]
    highest: dict[str, float | None] = {}
    n_min = min(sum(1 for r in runs if r.config.get("model.norm") == n and _same(r.config.get("optim.lr"), lr))
                for n in ("batch", "none") for lr in lrs)
    for norm in ("batch", "none"):
        cells = []
        highest[norm] = None
        for lr in lrs:
            cell = [r for r in runs if r.config.get("model.norm") == norm and _same(r.config.get("optim.lr"), lr)]
            ok = [r for r in cell if r.status == "completed" and (r.metrics.get("val/acc_best") or 0) >= CONVERGED]
            diverged = sum(r.status == "diverged" for r in cell)
            accs = list(by_seed(cell, "val/acc_best").values())
            cells.append(f"lr {lr:g}: {len(ok)}/{len(cell)} converged" + (f", {diverged} diverged" if diverged else "")
                         + (f", val acc {mean_ci(accs)}" if accs else ""))
            if cell and len(ok) == len(cell):
                highest[norm] = lr
        details.append(f"- model.norm={norm}: " + "; ".join(cells))
    details.append("Conditions: " + conditions(runs) + ".")
    hb, hn = highest["batch"], highest["none"]
    if n_min < MIN_SEEDS:
        verdict = f"undecided: too few seeds (n={n_min} per lr, need {MIN_SEEDS})"
    elif hb is not None and (hn is None or hb > hn):
        verdict = "holds"
    elif hb == hn:
        verdict = "fails: the same highest lr with and without"
    else:
        verdict = "fails"
    measured = (f"highest lr where every seed converges: batch {hb if hb is not None else 'none'}, without "
                f"{hn if hn is not None else 'none of the grid'} (grid {', '.join(f'{x:g}' for x in lrs)}, n={n_min})")
    return Row(claim, verdict, measured, details, [sweep_command("bn_lr_tolerance", runs)], "sweep",
               determinism(runs))


@from_sweep("bn_init_sensitivity", "BatchNorm lowers sensitivity to initialisation")
def claim_bn_init(ctx: Context, claim: str, runs: list[Run]) -> Row:
    scales = sorted({float(r.config["model.init_scale"]) for r in runs})
    spread: dict[str, dict[Any, float]] = {}
    details = ["Every conv and linear weight multiplied by model.init_scale after the default He init. "
               "Sensitivity: per seed, the range (max − min) of val/acc_best across the scales; a run that did not "
               "complete counts as chance (10%)."]
    for norm in ("batch", "none"):
        per_scale = {s: _acc_or_chance(runs, norm, s) for s in scales}
        seeds = set.intersection(*(set(v) for v in per_scale.values())) if per_scale else set()
        spread[norm] = {seed: max(per_scale[s][seed] for s in scales) - min(per_scale[s][seed] for s in scales)
                        for seed in seeds}
        details.append(f"- model.norm={norm}: " + "; ".join(
            f"scale {s:g}: {mean_ci(list(per_scale[s].values()))}" for s in scales) +
            f"; range across scales {mean_ci(list(spread[norm].values()))}")
    d = paired(spread["none"], spread["batch"])
    if d:
        details.append(f"- range without − range with BatchNorm: {show_diff(d)}")
    details.append("Conditions: " + conditions(runs) + ".")
    way = direction(d)
    verdict = {"up": "holds", "down": "fails"}.get(way) or undecided(d, "the range across init scales")
    measured = (f"val acc range across init x{', x'.join(f'{s:g}' for s in scales)}: batch "
                f"{100 * statistics.fmean(spread['batch'].values()):.1f}, none "
                f"{100 * statistics.fmean(spread['none'].values()):.1f} points (n={d.n if d else 0})"
                if spread["batch"] and spread["none"] else "—")
    return Row(claim, verdict, measured, details, [sweep_command("bn_init_sensitivity", runs)], "sweep",
               determinism(runs))


def _acc_or_chance(runs: Sequence[Run], norm: str, scale: float) -> dict[Any, float]:
    out = {}
    for r in runs:
        if r.config.get("model.norm") == norm and _same(r.config.get("model.init_scale"), scale):
            value = r.metrics.get("val/acc_best") if r.status == "completed" else None
            out[r.seed] = float(value) if isinstance(value, (int, float)) else 0.1
    return out


def claim_bn_modes(ctx: Context) -> Row:
    claim = ("BatchNorm normalises with batch statistics in training and running statistics (momentum 0.1) in "
             "eval, so the two modes give different outputs")
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(16, 4, 8, 8) * 3 + 2
    bn.train()
    bn(x)
    exact = torch.allclose(bn.running_mean, 0.1 * x.mean((0, 2, 3)), atol=1e-6)
    details = [f"torch.nn.BatchNorm2d's default momentum is {torch.nn.BatchNorm2d(1).momentum}, and after one "
               f"training batch its running mean is exactly 0.9 x 0 + 0.1 x the batch mean: "
               f"{'checked' if exact else 'NOT so'} here."]
    runs = ctx.sweeps.get("bn_small_batch")
    if not runs:
        row = missing(claim, "bn_small_batch")
        row.details = details + row.details
        return row
    details.append("The test set scored in eval mode (running statistics) and in train mode (each batch's own "
                   "statistics, batches of the training batch size, running statistics restored after): "
                   "bn/test_gap_acc = eval − train mode accuracy, per batch size and momentum:")
    differ = sum(1 for r in runs if r.status == "completed" and
                 r.metrics.get("bn/test_loss_eval_mode") != r.metrics.get("bn/test_loss_train_mode"))
    completed = sum(r.status == "completed" for r in runs)
    clear, n_min, cell_names, all_gaps = [], MIN_SEEDS, [], []
    for b in sorted({r.config["trainer.batch_size"] for r in runs}):
        for mom in sorted({float(r.config["model.norm_args.momentum"]) for r in runs}):
            gap = list(by_seed(runs, "bn/test_gap_acc", trainer__batch_size=b, model__norm_args__momentum=mom).values())
            acc = list(by_seed(runs, "test/acc", trainer__batch_size=b, model__norm_args__momentum=mom).values())
            n_min = min(n_min, len(gap))
            cell_names.append(f"batch {b}, momentum {mom:g}")
            all_gaps.append(statistics.fmean(gap) if gap else None)
            significant = len(gap) >= 2 and (lambda lo_hi: lo_hi[0] > 0 or lo_hi[1] < 0)(t_interval(gap, ALPHA))
            if significant:
                clear.append(f"batch {b}, momentum {mom:g}")
            details.append(f"- batch {b}, momentum {mom:g}: gap {mean_ci(gap, 100, ' points')}, test acc (eval mode) "
                           f"{mean_ci(acc)}{' — interval excludes 0' if significant else ''}")
    details.append("Conditions: " + conditions(runs) + ".")
    cells = len({(r.config["trainer.batch_size"], r.config["model.norm_args.momentum"]) for r in runs})
    unclear = [c for c in cell_names if c not in clear]
    if n_min < MIN_SEEDS:
        verdict = f"undecided: too few seeds (n={n_min} per cell, need {MIN_SEEDS})"
    elif not exact or differ < completed:
        verdict = "fails: " + ("the running mean does not follow momentum 0.1" if not exact else
                               f"eval and train mode gave the same test loss in {completed - differ} runs")
    else:
        verdict = "holds" + (f": the outputs differ in every run; the accuracy gap is not clear at {'; '.join(unclear)}"
                             if unclear else "")
    gaps = [g for g in all_gaps if g is not None]
    measured = (f"momentum 0.1 update exact; eval ≠ train mode test loss in {differ}/{completed} runs; accuracy "
                f"gap (eval − train mode) {min(gaps) * 100:.1f} to {max(gaps) * 100:.1f} points, clear in "
                f"{len(clear)} of {cells} batch x momentum cells" if gaps else "—")
    return Row(claim, verdict, measured, details,
               [sweep_command("bn_small_batch", runs),
                "sampler compare outputs/multirun/<time> --metric bn/test_gap_acc", "sampler inspect"],
               "sweep and computed", determinism(runs))


# ---------------------------------------------------------------- in-place ReLU

def claim_relu_inplace(ctx: Context) -> Row:
    claim = "ReLU(inplace=True) saves memory"
    x = torch.zeros(64, 3, 32, 32)
    details = ["Activation memory for a batch of 64 (counted like `sampler inspect`: what autograd saves for "
               "backward, the training step's peak of live tensors, and a no_grad forward's peak), default "
               "widths, fp32, in-place ReLU off → on:"]
    saves_train, saves_infer = [], []
    for order, norm in ((["conv", "norm", "act", "pool"], "batch"), (["conv", "act", "norm", "pool"], "batch"),
                        (["conv", "pool", "norm", "act"], "batch"), (["conv", "norm", "act", "pool"], "none")):
        mem = {inplace: activation_memory(build_model(order=order, norm=norm, act_args={"inplace": inplace}), x,
                                          lambda out: out.float().mean()) for inplace in (False, True)}
        d_train = (mem[False]["train_peak"] - mem[True]["train_peak"]) / 2**20
        d_saved = (mem[False]["saved"] - mem[True]["saved"]) / 2**20
        d_infer = (mem[False]["inference_peak"] - mem[True]["inference_peak"]) / 2**20
        label = f"order {','.join(order)}, norm {norm}"
        details.append(f"- {label}: {d_saved:.2f} MB less saved for backward, {d_train:.2f} MB less at the "
                       f"training step's peak, {d_infer:.2f} MB less at the inference peak")
        if d_train > 0.01:
            saves_train.append(label)
        if d_infer > 0.01:
            saves_infer.append(label)
    runs = ctx.sweeps.get("relu_inplace")
    commands = ["sampler inspect model.act_args.inplace=true", "sampler inspect model.act_args.inplace=false"]
    deterministic = "exact: no randomness"
    if runs:
        d = paired(by_seed(runs, "test/acc", model__act_args__inplace=True),
                   by_seed(runs, "test/acc", model__act_args__inplace=False))
        peak = {v: list(by_seed(runs, "memory/peak_mb", model__act_args__inplace=v).values()) for v in (False, True)}
        details.append(f"Trained (relu_inplace): test acc in-place − not {show_diff(d) if d else '—'}; the "
                       f"process's peak memory {mean_ci(peak[False], 1, ' MB')} without, "
                       f"{mean_ci(peak[True], 1, ' MB')} with (it includes the data, so it hides a map's size). "
                       + conditions(runs) + ".")
        commands.insert(0, sweep_command("relu_inplace", runs))
        deterministic = determinism(runs)
    if saves_train:
        verdict = "holds" if len(saves_train) == 4 else f"depends: saves in training only with {'; '.join(saves_train)}"
    elif saves_infer:
        verdict = ("depends: nothing in training in any order tried; at inference only with " + "; ".join(saves_infer))
    else:
        verdict = "fails: saves nothing in any order tried"
    return Row(claim, verdict, f"training saves in {len(saves_train)}/4 layouts, inference in {len(saves_infer)}/4",
               details, commands, "computed" + (" and sweep" if runs else ""), deterministic)


# ---------------------------------------------------------------- upsampling

MODES = ("nearest", "bilinear", "bicubic")


def _upsample(x: torch.Tensor, mode: str, factor: int = 4) -> torch.Tensor:
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, scale_factor=factor, mode=mode, **kwargs)


def _blockiness(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Per image: the share of all change along rows that happens across the borders of
    the factor x factor cells of the low-resolution grid: 1 when the image is made of
    flat blocks (nearest), about 1/factor when change is spread evenly."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
    border = torch.zeros(dx.shape[-1], dtype=torch.bool)
    border[factor - 1::factor] = True
    return dx[..., border].sum((1, 2, 3)) / dx.sum((1, 2, 3)).clamp(min=1e-9)


def _roughness(x: torch.Tensor) -> torch.Tensor:
    """Per image: the mean absolute second difference (a discrete curvature) along rows
    and columns: lower is smoother."""
    d2x = (x[..., :, 2:] - 2 * x[..., :, 1:-1] + x[..., :, :-2]).abs().mean((1, 2, 3))
    d2y = (x[..., 2:, :] - 2 * x[..., 1:-1, :] + x[..., :-2, :]).abs().mean((1, 2, 3))
    return (d2x + d2y) / 2


def _kinks(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Per image: the share of all curvature (absolute second difference along rows) at
    the columns beside the low-resolution samples, where the interpolant's pieces meet
    (output pixels factor*i + factor/2 - 1 and factor*i + factor/2 with
    align_corners=False). A piecewise-linear interpolant (bilinear) bends only there: 1;
    a smooth (C1) one spreads its curvature: nearer 2/factor."""
    d2 = (x[..., :, 2:] - 2 * x[..., :, 1:-1] + x[..., :, :-2]).abs()
    column = (torch.arange(d2.shape[-1]) + 1) % factor  # d2[..., j] is centred on output column j + 1
    knot = (column == factor // 2 - 1) | (column == factor // 2)
    return d2[..., knot].sum((1, 2, 3)) / d2.sum((1, 2, 3)).clamp(min=1e-9)


def _time_ms(fn: Callable[[], Any], repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def claim_upsampling(ctx: Context) -> Row:
    claim = "Bilinear is the good default upsampling; bicubic is smoother and costlier; nearest is blocky"
    images = _test_images(ctx, "camvid", 24)
    source = "CamVid test images"
    if images is None:
        images, source = _test_images(ctx, "cifar10", 500), "CIFAR-10 test images"
    details: list[str] = []
    verdict_parts: list[str] = []
    factor = 4
    if images is not None:
        x = _luma(images)
        small = F.avg_pool2d(x, factor)
        up = {m: _upsample(small, m, factor).clamp(0, 1) for m in MODES}
        block = {m: _blockiness(up[m], factor).tolist() for m in MODES}
        rough = {m: _roughness(up[m]).tolist() for m in MODES}
        kinks = {m: _kinks(up[m], factor).tolist() for m in MODES}
        psnr = {m: (-10 * torch.log10(((up[m] - x) ** 2).mean((1, 2, 3)))).tolist() for m in MODES}
        details.append(f"{len(x)} {source} (luminance, {x.shape[-2]}x{x.shape[-1]}), shrunk 4x by average pooling "
                       "and upsampled back 4x with each mode. Blockiness: the share of all change along rows that "
                       "happens across the low-resolution cells' borders (1 = flat blocks; 0.25 = spread evenly); "
                       "kinks: the share of all curvature beside the low-resolution samples, where the "
                       "interpolant's pieces meet (1 = piecewise linear; 0.5 = spread evenly, a smooth C1 curve); "
                       "roughness: the mean absolute second difference overall, in 1e-3 of the intensity range "
                       "(detail kept raises it); PSNR against the original:")
        for m in MODES:
            details.append(f"- {m}: blockiness {mean_ci(block[m], 1, '', 3)}, kinks {mean_ci(kinks[m], 1, '', 3)}, "
                           f"roughness {mean_ci(rough[m], 1000, '')}, PSNR {mean_ci(psnr[m], 1, ' dB')}")
        blocky = t_interval([a - b for a, b in zip(block["nearest"], block["bilinear"])], ALPHA)[0] > 0
        lo, hi = t_interval([a - b for a, b in zip(kinks["bicubic"], kinks["bilinear"])], ALPHA)
        verdict_parts.append(f"nearest blocky: {'holds' if blocky else 'fails'} (blockiness "
                             f"{statistics.fmean(block['nearest']):.2f} vs bilinear's "
                             f"{statistics.fmean(block['bilinear']):.2f})")
        verdict_parts.append("bicubic smoother: " + ("holds" if hi < 0 else "fails" if lo > 0 else "undecided") +
                             f" (kinks {statistics.fmean(kinks['bicubic']):.2f} vs bilinear's "
                             f"{statistics.fmean(kinks['bilinear']):.2f}; it keeps more detail: roughness "
                             f"{statistics.fmean(rough['bicubic']) / statistics.fmean(rough['bilinear']):.2f}x)")
    else:
        verdict_parts += ["nearest blocky: not measured (needs CamVid or CIFAR-10 images: --data-root)",
                          "bicubic smoother: not measured (needs CamVid or CIFAR-10 images: --data-root)"]
    feature = torch.randn(8, 64, 90, 120)
    cost = {m: _time_ms(lambda m=m: _upsample(feature, m, 2)) for m in MODES}
    details.append(f"Cost: F.interpolate of an 8x64x90x120 map (a decoder's size on CamVid at batch 8) to 2x, "
                   f"median of 15, {torch.get_num_threads()} threads: " +
                   ", ".join(f"{m} {cost[m]:.1f} ms" for m in MODES) + ".")
    verdict_parts.append(f"bicubic costlier: {'holds' if cost['bicubic'] > 1.1 * cost['bilinear'] else 'fails'} "
                         f"({cost['bicubic'] / cost['bilinear']:.1f}x bilinear)")
    runs = ctx.sweeps.get("upsample_modes")
    commands = ["sampler claims  (computed: experiments/tools/claims.py, claim_upsampling)"]
    deterministic = "exact (images); timing varies"
    if runs:
        miou = {m: by_seed(runs, "test/miou", head__upsample=m) for m in MODES}
        present = [m for m in MODES if miou[m]]
        best = max(present, key=lambda m: statistics.fmean(miou[m].values())) if present else None
        details.append("Trained (upsample_modes, SegNet-style decoder without skips): test mIoU " +
                       "; ".join(f"{m} {mean_ci(list(miou[m].values()))}" for m in present) + ".")
        others = [m for m in present if m != "bilinear"]
        diffs = {m: paired(miou["bilinear"], miou[m]) for m in others}
        tested = [m for m in others if diffs[m]]
        corrected = dict(zip(tested, holm([diffs[m].p for m in tested]))) if tested else {}
        for m in tested:
            details.append(f"- bilinear − {m}: {show_diff(diffs[m])}, Holm p={corrected[m]:.3g}")
        worse = [m for m in tested if direction(diffs[m], corrected[m]) == "down"]
        n = min((d.n for d in diffs.values() if d), default=0)
        if "bilinear" not in present or n < MIN_SEEDS:
            verdict_parts.append(f"bilinear the good default: undecided (n={n})")
        elif worse:
            verdict_parts.append(f"bilinear the good default: fails ({', '.join(worse)} better)")
        else:
            better = [m for m in tested if direction(diffs[m], corrected[m]) == "up"]
            verdict_parts.append("bilinear the good default: " + (
                f"holds (better than {', '.join(better)})" if better else
                f"undecided: no mode separable from it at n={n} (best mean: {best})"))
        details.append("Conditions: " + conditions(runs) + ".")
        commands.insert(0, sweep_command("upsample_modes", runs))
        deterministic = determinism(runs) + "; images exact; timing varies"
    else:
        verdict_parts.append("bilinear the good default: not measured (run `sampler train -m experiment=upsample_modes`)")
    # Each part reads "<part>: <verdict word> (<figures>)": the verdict column names the
    # parts and their words, the measured column keeps the figures.
    words = [(p.split(": ", 1)[0], p.split(": ", 1)[1].split(" ")[0].rstrip(":")) for p in verdict_parts]
    said = {w for _, w in words}
    head = ("holds" if said == {"holds"} else "fails" if said == {"fails"} else
            "not measured in part" if "not" in said else "depends")
    verdict = head if head in ("holds", "fails") else f"{head}: " + "; ".join(
        f"{part} {'not measured' if w == 'not' else w}" for part, w in words)
    return Row(claim, verdict, "; ".join(verdict_parts), details, commands,
               "computed" + (" and sweep" if runs else ""), deterministic)


def _test_images(ctx: Context, name: str, count: int) -> torch.Tensor | None:
    """`count` test images (uint8, N x 3 x H x W) of a data set under the data root, or None."""
    if ctx.data_root is None:
        return None
    from sampler.blocks.registry import call_with_accepted

    from ..data import DATASETS
    from .config import compose

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose([f"data={name}", f"data.root={ctx.data_root}"])
        d = dict(cfg["data"], test_size=None, subset=None, val_size=0)
        if "download" in d:
            d["download"] = False  # a report never downloads: without the data, that row says so
        data = call_with_accepted(DATASETS.get(name).load, d)
    except (ConfigError, OSError, HydraException, OmegaConfBaseException):
        return None
    index = torch.linspace(0, len(data.test) - 1, min(count, len(data.test))).round().long()
    return data.test.images[index]


# ---------------------------------------------------------------- the report

CLAIMS: tuple[Callable[[Context], Row], ...] = (
    claim_pool_cost, claim_receptive_field, claim_shift_invariance, claim_max_sharp, claim_bn_convergence,
    claim_bn_lr, claim_bn_init, claim_bn_modes, claim_relu_inplace, claim_upsampling)


def build_rows(sweeps_root: Path, data_root: Path | None, given: bool = True) -> list[Row]:
    """Every claim's row. A sweeps folder the user named must exist (as compare refuses
    it: a report "from" nowhere would read as if nothing had been measured); the default
    outputs/multirun may not yet: before any sweep, the computed claims are judged and
    each measured one says which sweep to run."""
    if given and not sweeps_root.exists():
        raise ConfigError(str(sweeps_root), "does not exist; pass the folder that holds the claim presets' "
                          "sweeps (outputs/multirun by default), or run them first: sampler train -m "
                          "experiment=bn_convergence, and the other presets sampler ls lists")
    ctx = Context(find_sweeps(sweeps_root) if sweeps_root.exists() else {}, data_root)
    return [claim(ctx) for claim in CLAIMS]


def render(rows: Sequence[Row], sweeps_root: Path) -> str:
    hw, v, git = hardware(), versions(), git_state()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# The course notes' claims, measured",
        "",
        f"Written by `sampler claims` on {now} from the sweeps under `{sweeps_root}` and from computations on "
        f"this machine: {hw['cpu']}, {hw['cores']} cores, {', '.join(hw['features']) or 'no AVX'}; torch "
        f"{v['torch']}, sampler at {(git.get('commit') or '?')[:7]}. Each sweep's own date, commit and CPU are in "
        "its section. Statistics: 95% t-intervals; differences paired by seed (the seed fixes init, data order "
        f"and augmentation); Holm's correction where one claim tests several variants; a claim needs at least "
        f"{MIN_SEEDS} seeds per variant to be decided.",
        "",
        "Verdicts: **holds**, **fails**, **depends** (on what, it says), **undecided** (the seeds cannot separate "
        "the variants; it says about how many would), **not measured** (the command to run).",
        "",
        "| # | Claim | Verdict | Measured | Deterministic |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows, 1):
        lines.append(f"| {i} | {row.claim} | {_bold_verdict(row.verdict)} | {row.measured} | {row.deterministic} |")
    for i, row in enumerate(rows, 1):
        lines += ["", f"## {i}. {row.claim}", "", f"Verdict: {_bold_verdict(row.verdict)}. Evidence: {row.evidence}.", ""]
        lines += row.details
        lines += ["", "Reproduce:", "", "```", *row.commands, "```"]
    return "\n".join(lines) + "\n"


def _bold_verdict(verdict: str) -> str:
    head, sep, rest = verdict.partition(":")
    return f"**{head}**{sep}{rest}"


def write_claims(sweeps_root: Path, out: Path, data_root: Path | None, given: bool = True) -> list[Row]:
    from ..runs.atomic import write_text

    rows = build_rows(sweeps_root, data_root, given)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, render(rows, sweeps_root), where="--out")
    return rows


def print_claims(sweeps_root: Path | None, out: Path, data_root: Path | None = None) -> None:
    """`sampler claims`: write the report and show its table."""
    import os

    from rich.console import Console
    from rich.table import Table

    root = data_root or Path(os.environ.get("SAMPLER_DATA", "data"))
    given = sweeps_root is not None
    sweeps_root = Path(sweeps_root) if given else Path("outputs/multirun")
    rows = write_claims(sweeps_root, Path(out), root if root.exists() else None, given)
    table = Table(title=f"claims (details and commands: {out})")
    for col in ("#", "claim", "verdict", "measured"):
        table.add_column(col, overflow="fold")
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), row.claim, row.verdict, row.measured)
    Console().print(table)
