"""Error bars, defined once: bootstrap intervals over samples and paired tests between sizes.

Every per-size metric that is a mean over samples (accuracy, a hit rate, mAP@k per query)
gets a percentile bootstrap interval from :func:`bootstrap_means`. The resamples are drawn
once per call and shared by every row (size, model), so differences between rows and
statistics derived from all rows together (the smallest size within a tolerance of the
full size, :func:`smallest_within_interval`) get intervals from the same resamples.

The bootstrap is the plain nonparametric one (N samples drawn with replacement), computed
as ``values @ counts.T`` with a ``[B, N]`` matrix of draw counts, in blocks of resamples so
memory stays bounded; no Python loop over samples or resamples.

:func:`mcnemar` compares two sizes on the *same* samples (exact binomial McNemar test on
the discordant pairs), so "64 vs 128" can be read as a real difference or as noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from mrl_analysis.core.checks import check_fraction, check_int
from mrl_analysis.core.sizes import as_good, cheapest_within

#: Resamples per bootstrap unless a caller asks otherwise.
N_BOOT = 1000
LEVEL = 0.95
#: Elements of the ``[B, N]`` count matrix built at once (about 64 MB of int64).
_BLOCK = 1 << 23


@dataclass(frozen=True)
class Bootstrap:
    """Means of ``K`` rows and their bootstrap replicates ``[K, B]`` (shared resamples)."""

    mean: np.ndarray
    replicates: np.ndarray
    level: float

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval ``(low, high)`` of every row at :attr:`level`."""
        return percentile_interval(self.replicates, self.level)


def percentile_interval(
    replicates: np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` percentiles of ``replicates [..., B]`` covering ``level``.

    NaN replicates (a ratio whose denominator was 0 in that resample) are left out; a row
    of NaN only gets a NaN interval.
    """
    level = check_fraction(level, "level")
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": NaN is the answer
        low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=-1)
    return low, high


def bootstrap_means(
    values: np.ndarray, n_boot: int = N_BOOT, *, level: float = LEVEL, seed: int = 0
) -> Bootstrap:
    """Bootstrap the row means of ``values [K, N]`` (or ``[N]``) over the ``N`` samples.

    All rows share the resamples, so they stay paired (same samples in every replicate).
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"values must be [K, N] with N >= 1 samples, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values hold NaN or inf: bootstrap finite per-sample values only")
    n_boot = check_int(n_boot, "n_boot", low=1)
    k, n = v.shape
    rng = np.random.default_rng(seed)
    reps = np.empty((k, n_boot))
    step = max(1, _BLOCK // n)
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount(
            (draws + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n
        ).reshape(b, n)
        reps[:, start : start + b] = v @ counts.T.astype(np.float64) / n
    return Bootstrap(mean=v.mean(axis=1), replicates=reps, level=level)


def mean_ci(
    values: np.ndarray, n_boot: int = N_BOOT, *, level: float = LEVEL, seed: int = 0
) -> pd.DataFrame:
    """Row means of ``values [K, N]`` with bootstrap intervals: ``value, ci_low, ci_high``."""
    boot = bootstrap_means(values, n_boot, level=level, seed=seed)
    low, high = boot.interval()
    return pd.DataFrame({"value": boot.mean, "ci_low": low, "ci_high": high})


def bootstrap_ratios(
    numerators: np.ndarray,
    denominators: np.ndarray,
    n_boot: int = N_BOOT,
    *,
    level: float = LEVEL,
    seed: int = 0,
) -> Bootstrap:
    """Bootstrap ratios of sums ``sum(numerators[k]) / sum(denominators[k])`` over samples.

    ``numerators [K, N]``; ``denominators [K, N]`` or ``[N]`` (one for every row). For rates
    over a subset of the samples (accuracy within a superclass, the share of errors that
    stay in the true superclass): the numerator counts the hits among the subset, the
    denominator marks the subset. The resamples are those of :func:`bootstrap_means` with
    the same ``seed`` and ``N``, so ratios pair with means over the same samples. A ratio
    whose denominator sums to 0 is NaN (in a replicate: left out of the interval).
    """
    num = np.atleast_2d(np.asarray(numerators, dtype=np.float64))
    den = np.atleast_2d(np.asarray(denominators, dtype=np.float64))
    if den.shape[0] == 1:
        den = np.broadcast_to(den, num.shape)
    if num.shape != den.shape:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must both be [K, N]")
    k = num.shape[0]
    boot = bootstrap_means(np.concatenate([num, den]), n_boot, level=level, seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(boot.mean[k:] > 0, boot.mean[:k] / boot.mean[k:], np.nan)
        reps = np.where(boot.replicates[k:] > 0, boot.replicates[:k] / boot.replicates[k:], np.nan)
    return Bootstrap(mean=mean, replicates=reps, level=level)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> pd.DataFrame:
    """Exact McNemar tests of paired outcomes: rows of ``correct_a`` vs ``correct_b``.

    Both ``[K, N]`` (or ``[N]``) booleans on the same samples. Columns: ``only_a`` and
    ``only_b`` (discordant counts), ``p_value`` (two-sided exact binomial test on the
    discordant pairs; 1 when there are none).
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    b = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have one shape, got {a.shape} and {b.shape}")
    only_a = (a & ~b).sum(axis=1)
    only_b = (~a & b).sum(axis=1)
    total = only_a + only_b
    p = np.where(
        total > 0,
        np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(only_a, only_b), np.maximum(total, 1), 0.5)),
        1.0,
    )
    return pd.DataFrame({"only_a": only_a, "only_b": only_b, "p_value": p})


def adjacent_tests(
    correct: np.ndarray, sizes: Sequence[int], *, alpha: float = 0.05
) -> pd.DataFrame:
    """McNemar between each pair of adjacent sizes of ``correct [G, N]`` (same samples).

    Columns: ``truncate_dim``, ``next_dim``, ``accuracy``, ``next_accuracy``, ``delta``
    (next − this, a fraction), ``only_smaller``, ``only_larger``, ``p_value`` and
    ``significant`` (p < ``alpha``).
    """
    c = np.asarray(correct, dtype=bool)
    if c.ndim != 2 or c.shape[0] != len(sizes):
        raise ValueError(f"correct must be [len(sizes), N], got {c.shape} for {len(sizes)} sizes")
    alpha = check_fraction(alpha, "alpha")
    acc = c.mean(axis=1)
    tests = mcnemar(c[:-1], c[1:])
    return pd.DataFrame(
        {
            "truncate_dim": list(sizes[:-1]),
            "next_dim": list(sizes[1:]),
            "accuracy": acc[:-1],
            "next_accuracy": acc[1:],
            "delta": acc[1:] - acc[:-1],
            "only_smaller": tests["only_a"].to_numpy(),
            "only_larger": tests["only_b"].to_numpy(),
            "p_value": tests["p_value"].to_numpy(),
            "significant": tests["p_value"].to_numpy() < alpha,
        }
    )


def smallest_within_interval(
    boot: Bootstrap, sizes: Sequence[int], tolerance: float = 0.0
) -> dict[str, float]:
    """The smallest size whose mean is within ``tolerance`` of the largest size's, with an
    interval: the same rule applied to every bootstrap replicate.

    ``boot``: :func:`bootstrap_means` of per-size outcomes ``[G, N]`` (sizes ascending).
    Returns ``smallest_dim`` (on the data), ``ci_low_dim`` / ``ci_high_dim`` (percentiles of
    the replicates' smallest sizes) and ``reference_dim``.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    sizes_arr = np.asarray(sizes)
    if boot.mean.shape[0] != len(sizes_arr):
        raise ValueError(f"boot has {boot.mean.shape[0]} rows for {len(sizes_arr)} sizes")
    point = int(sizes_arr[int(cheapest_within(boot.mean, sizes_arr, boot.mean[-1], tolerance))])
    rep_dims = smallest_within_replicates(boot, sizes_arr, tolerance)
    tail = 100 * (1 - boot.level) / 2
    # "nearest" keeps the interval's ends on the size ladder.
    lo_dim, hi_dim = np.percentile(rep_dims, [tail, 100 - tail], method="nearest")
    return {
        "reference_dim": int(sizes_arr[-1]),
        "smallest_dim": point,
        "ci_low_dim": int(lo_dim),
        "ci_high_dim": int(hi_dim),
    }


def smallest_within_replicates(
    boot: Bootstrap, sizes: Sequence[int], tolerance: float = 0.0
) -> np.ndarray:
    """The smallest size within ``tolerance`` of the largest size's mean, in every bootstrap
    replicate of ``boot`` (per-size outcomes ``[G, N]``, sizes ascending): ``[B]`` sizes.

    For statistics built from several such sizes (e.g. the difference between two
    saturation sizes), whose interval is then :func:`percentile_interval` of the result.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    sizes_arr = np.asarray(sizes)
    if boot.replicates.shape[0] != len(sizes_arr):
        raise ValueError(f"boot has {boot.replicates.shape[0]} rows for {len(sizes_arr)} sizes")
    # Sizes ascend, so the first size as good as the largest is the cheapest, per replicate.
    return sizes_arr[np.argmax(as_good(boot.replicates, boot.replicates[-1:], tolerance), axis=0)]
