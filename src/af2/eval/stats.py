"""Uncertainty for benchmark scores: 95 % intervals and paired tests between two runs.

- Proportions (accuracy): the Wilson score interval, which stays inside [0, 1] and behaves at
  0 % and 100 % where the normal approximation does not.
- Means of per-item scores (CIDEr-D, ROUGE-L, judge, similarity): a percentile bootstrap over
  items, seeded, so the same predictions always give the same interval. CIDEr-D's corpus score is
  the mean of its per-item scores with the IDF taken from the whole set; the bootstrap resamples
  those per-item scores and keeps that IDF fixed (re-fitting it per resample would cost one full
  CIDEr-D run per resample).
- Two runs on the same items: McNemar's exact test on the discordant pairs for right/wrong
  scores, a paired bootstrap of the mean difference otherwise. Both are two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, as fractions in [0, 1]."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes the bound is exactly 0 or 1; say so instead of leaving rounding residue.
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (R, n)


def bootstrap_mean(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval of the mean of ``values`` (resampling items)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    means = x[_resample_index(x.size, resamples, seed)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float]:
    """McNemar's exact test: p-value of the discordant counts under 'both runs equally good'."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"McNemar needs paired items: {len(a_correct)} vs {len(b_correct)}")
    only_a = sum(1 for a, b in zip(a_correct, b_correct) if a and not b)
    only_b = sum(1 for a, b in zip(a_correct, b_correct) if b and not a)
    n = only_a + only_b
    if n == 0:
        p = 1.0
    else:  # exact binomial tail in integers, so n in the thousands stays exact
        tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
        p = min(1.0, 2 * tail / 2**n)
    return {"only_a": float(only_a), "only_b": float(only_b), "p_value": p}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Mean of b - a over items, its 95 % interval and a two-sided bootstrap p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs paired items: {len(a)} vs {len(b)}")
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.size == 0:
        return {"difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": 1.0}
    means = diff[_resample_index(diff.size, resamples, seed)].mean(axis=1)  # (R,)
    low, high = np.percentile(means, [2.5, 97.5])
    # Two-sided: twice the share of resampled means on the far side of zero (at most 1).
    far = min(float((means <= 0).mean()), float((means >= 0).mean()))
    return {"difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "p_value": min(1.0, 2 * far)}
