"""The diagnostic's verdict: one line per model, and the numbers it is built from.

Per model, on the verdict metric (``map`` = mAP@k by default), over the *small* sizes
(``m <= small_max``):

* ``vs_pca``: mean of prefix − PCA (fraction), with its paired bootstrap interval;
* ``vs_random``: mean of prefix − random dims;
* ``renormalization``: mean of not-renormalized − renormalized prefixes (what the bug costs);
* ``smallest_dim``: the smallest prefix size within ``tolerance`` of the full embedding, with
  its interval (on a ladder of sizes; the full size when nothing smaller is);
* ``empty_smallest``: the share of samples whose prefix at the smallest size is all zero
  (when the shares are given): such prefixes have no cosine neighbours, which explains
  poor small prefixes of ReLU embeddings with dead leading units.

A comparison *beats* / *trails* when its whole interval is above / below 0, else it *matches*.
The class: **Matryoshka** when prefixes beat random dims and do not trail PCA (truncate
directly); **PCA first** when prefixes trail PCA (rotate, then truncate); else **not
nested** (prefixes are no better than random dimensions).

Across models (:func:`comparison_row`): a nested model's first m dims against a reference
embedding's (e.g. FF-512) first m dims and its top-m PCA dims, at the small sizes both have;
paired, since every model is searched with the same queries and bootstrapped with the same
resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.stats import percentile_interval
from mrl_analysis.diagnostic.prefixes import PrefixQuality, metric_label

VERDICT_COLUMNS = [
    "model",
    "verdict",
    "metric",
    "small_max",
    "vs_pca",
    "vs_pca_low",
    "vs_pca_high",
    "vs_random",
    "vs_random_low",
    "vs_random_high",
    "renormalization",
    "renormalization_low",
    "renormalization_high",
    "smallest_dim",
    "smallest_dim_low",
    "smallest_dim_high",
    "full_dim",
    "empty_smallest",
    "text",
]
COMPARISON_COLUMNS = [
    "model",
    "reference",
    "metric",
    "small_max",
    "vs_prefix",
    "vs_prefix_low",
    "vs_prefix_high",
    "vs_pca",
    "vs_pca_low",
    "vs_pca_high",
    "text",
]
MATRYOSHKA, PCA_FIRST, NOT_NESTED = "Matryoshka", "PCA first", "not nested"


def default_small_max(sizes: Sequence[int], dim: int) -> int:
    """Small sizes go up to ``dim / 32`` (64 of 2048, 16 of 512), at least the smallest size."""
    return max(min(sizes), dim // 32)


def _side(low: float, high: float) -> str:
    return "beat" if low > 0 else "trail" if high < 0 else "match"


def _points(value: float, low: float, high: float) -> str:
    return f"{100 * value:+.1f} pt [{100 * low:+.1f}, {100 * high:+.1f}]"


def verdict_row(
    model: str,
    quality: PrefixQuality,
    *,
    metric: str = "map",
    tolerance: float = 0.01,
    small_max: int | None = None,
    empty_smallest: float | None = None,
) -> dict:
    """One row of :data:`VERDICT_COLUMNS` for ``model`` (module docstring);
    ``empty_smallest``: the ``empty`` share at the smallest size, if known."""
    tolerance = check_fraction(tolerance, "tolerance")
    if metric not in ("knn", "map"):
        raise ValueError(f"metric must be 'knn' or 'map', got {metric!r}")
    small_max = default_small_max(quality.sizes, quality.dim) if small_max is None else small_max
    small = [m for m in quality.sizes if m <= small_max]
    if not small:
        raise ValueError(f"no size <= small_max={small_max} among {quality.sizes}")
    pca = quality.difference("prefix", "pca", metric, small)
    rand = quality.difference("prefix", "random", metric, small)
    renorm = quality.difference("norm-first", "prefix", metric, small)
    within = quality.smallest_within(metric, tolerance)
    if _side(*pca[1:]) == "trail":
        verdict = PCA_FIRST
    elif _side(*rand[1:]) == "beat":
        verdict = MATRYOSHKA
    else:
        verdict = NOT_NESTED
    name = metric_label(metric, quality.knn_k, quality.map_k)
    text = (
        f"{model}: {verdict}. At m ≤ {small_max}, prefixes {_side(*pca[1:])} PCA "
        f"({_points(*pca)}) and {_side(*rand[1:])} random dims ({_points(*rand)}) in {name}; "
        f"within {100 * tolerance:g} pt of the full embedding from m = {within['smallest_dim']} "
        f"[{within['ci_low_dim']}, {within['ci_high_dim']}] of {quality.dim}; skipping the "
        f"renormalization changes it by {_points(*renorm)}"
    )
    if empty_smallest is not None and empty_smallest >= 0.01:
        text += (
            f"; {100 * empty_smallest:.0f}% of the m = {quality.sizes[0]} prefixes are all "
            "zero (no direction to compare)"
        )
    return {
        "model": model,
        "verdict": verdict,
        "metric": name,
        "small_max": small_max,
        "vs_pca": pca[0],
        "vs_pca_low": pca[1],
        "vs_pca_high": pca[2],
        "vs_random": rand[0],
        "vs_random_low": rand[1],
        "vs_random_high": rand[2],
        "renormalization": renorm[0],
        "renormalization_low": renorm[1],
        "renormalization_high": renorm[2],
        "smallest_dim": within["smallest_dim"],
        "smallest_dim_low": within["ci_low_dim"],
        "smallest_dim_high": within["ci_high_dim"],
        "full_dim": quality.dim,
        "empty_smallest": float("nan") if empty_smallest is None else float(empty_smallest),
        "text": text,
    }


def verdicts(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`verdict_row` as a table (:data:`VERDICT_COLUMNS`)."""
    return pd.DataFrame(list(rows), columns=VERDICT_COLUMNS)


def comparison_row(
    model: str,
    quality: PrefixQuality,
    reference: str,
    reference_quality: PrefixQuality,
    *,
    metric: str = "map",
    small_max: int | None = None,
) -> dict:
    """One row of :data:`COMPARISON_COLUMNS`: mean over the small sizes both models have of
    ``model``'s prefixes − ``reference``'s prefixes (``vs_prefix``) and − its PCA dims
    (``vs_pca``), fractions with paired intervals.

    Both must come from the same queries and bootstrap (``diagnose`` ensures it); the
    replicates are then differenced resample by resample.
    """
    if metric not in ("knn", "map"):
        raise ValueError(f"metric must be 'knn' or 'map', got {metric!r}")
    a, b = quality.boot.replicates, reference_quality.boot.replicates
    if quality.queries != reference_quality.queries or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{model} and {reference} were not bootstrapped over the same queries: compare "
            "models of one diagnose() call"
        )
    shared = sorted(set(quality.sizes) & set(reference_quality.sizes))
    small_max = default_small_max(shared, quality.dim) if small_max is None else small_max
    small = [m for m in shared if m <= small_max]
    if not small:
        raise ValueError(f"no size <= small_max={small_max} that both {model} and {reference} have")
    mine = quality.series("prefix", metric, small)

    def versus(variant: str) -> tuple[float, float, float]:
        other = reference_quality.series(variant, metric, small)
        reps = (mine.replicates - other.replicates).mean(axis=0)
        low, high = percentile_interval(reps, quality.boot.level)
        return float((mine.mean - other.mean).mean()), float(low), float(high)

    prefix, pca = versus("prefix"), versus("pca")
    name = metric_label(metric, quality.knn_k, quality.map_k)
    text = (
        f"{model} vs {reference}: at m ≤ {small_max}, {model}'s first m dims "
        f"{_side(*prefix[1:])} {reference}'s first m dims ({_points(*prefix)}) and "
        f"{_side(*pca[1:])} {reference}'s top-m PCA dims ({_points(*pca)}) in {name}"
    )
    return {
        "model": model,
        "reference": reference,
        "metric": name,
        "small_max": small_max,
        "vs_prefix": prefix[0],
        "vs_prefix_low": prefix[1],
        "vs_prefix_high": prefix[2],
        "vs_pca": pca[0],
        "vs_pca_low": pca[1],
        "vs_pca_high": pca[2],
        "text": text,
    }


def comparisons(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`comparison_row` as a table (:data:`COMPARISON_COLUMNS`)."""
    return pd.DataFrame(list(rows), columns=COMPARISON_COLUMNS)
