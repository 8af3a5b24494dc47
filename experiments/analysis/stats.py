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
