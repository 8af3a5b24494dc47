"""The statistics `sampler compare` rests on, as plain functions of per-seed scores
(DESIGN §7): a t-based confidence interval, and two-sided t-tests, paired when both
variants ran the same seeds (the seed fixes init, data order and augmentation, so
pairing removes that shared noise), Welch's otherwise."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def t_interval(scores: Sequence[float], alpha: float) -> tuple[float, float]:
    """The (1 - alpha) t-interval of the mean; needs at least two scores."""
    from scipy import stats

    x = np.asarray(scores, dtype=float)
    half = stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def paired_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of the paired t-test; a and b are aligned seed by seed. Without any
    spread in the differences, p is 1 when they are all zero and 0 otherwise."""
    from scipy import stats

    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.ptp(diffs) == 0:
        return 1.0 if np.all(diffs == 0) else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's unequal-variance t-test (1 or 0 when neither side varies)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.std() == 0 and y.std() == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down correction (Holm 1979): the adjusted p-values of m tests, in their
    order. Controls the family-wise error rate; never less powerful than Bonferroni."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def difference_ci(a: Sequence[float], b: Sequence[float], paired: bool, alpha: float) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its (1 - alpha) t-interval: of the seed-by-seed differences
    when paired, else Welch's (Welch-Satterthwaite degrees of freedom)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        d = x - y
        half = stats.t.ppf(1 - alpha / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = stats.t.ppf(1 - alpha / 2, df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def probability_better(a: Sequence[float], b: Sequence[float], paired: bool) -> float:
    """How often a beats b: over the shared seeds when paired, else over every pair of
    runs (the common-language effect size); ties count half."""
    if paired:
        pairs = list(zip(a, b))
    else:
        pairs = [(x, y) for x in a for y in b]
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs) / len(pairs)


def seeds_needed(std: float, effect: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
                 most: int = 1000) -> int | None:
    """Seeds per variant for a two-sided t-test at `alpha` to detect a true difference of
    `effect` with probability `power`, given the per-seed spread `std` (of the
    differences when paired, of each variant's scores otherwise): the exact noncentral-t
    power, not the normal approximation. None when more than `most` would be needed."""
    from scipy import stats

    if std <= 0:
        return 2
    for n in range(2, most + 1):
        if paired:
            df, nc = n - 1, effect / (std / math.sqrt(n))
        else:
            df, nc = 2 * n - 2, effect / (std * math.sqrt(2 / n))
        crit = stats.t.ppf(1 - alpha / 2, df)
        if stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= power:
            return n
    return None
