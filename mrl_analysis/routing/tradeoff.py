"""The accuracy-vs-cost plane: one row per point of every routing method.

Points come from cascades (one per cap), learned routers (one per cost weight), single
sizes (one per model × size) and oracles (one star each), with the columns ``method,
label, accuracy(_std), accuracy_ci_low/_high, expected_size(_std),
expected_cumulative_size(_std), expected_head_macs(_std)``; accuracies are fractions, their
interval is over splits for cascades and routers, a bootstrap over the samples for single
sizes and oracles. :func:`size_reduction` reads the
plane's central claim off it, "as accurate as FF-k at a *k*× smaller size", through the
library's one within-tolerance rule (:func:`~mrl_analysis.core.sizes.cheapest_within`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.sizes import cheapest_within
from mrl_analysis.routing.cascade import CascadeStudy
from mrl_analysis.routing.router import RouterStudy

#: The columns of a plane table, in order.
POINT_COLUMNS = [
    "method",
    "label",
    "accuracy",
    "accuracy_std",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "expected_size",
    "expected_size_std",
    "expected_cumulative_size",
    "expected_cumulative_size_std",
    "expected_head_macs",
    "expected_head_macs_std",
]


def single_size_points(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Plane rows from per-size top-1 tables: :func:`~mrl_analysis.routing.oracle.accuracy_by_size`
    (``accuracy``) or a long table with ``metric == "top1"`` and ``value`` (as
    :func:`mrl_analysis.accuracy.metrics.linear_accuracy` writes it); fractions both."""
    if "metric" in accuracy.columns:
        accuracy = accuracy[accuracy["metric"] == "top1"].rename(columns={"value": "accuracy"})
    nan = pd.Series(np.nan, index=accuracy.index)
    return pd.DataFrame(
        {
            "method": accuracy["model"].to_numpy(),
            "label": [f"d = {m}" for m in accuracy["truncate_dim"]],
            "expected_size": accuracy["truncate_dim"].to_numpy(dtype=float),
            "expected_size_std": np.nan,
            "expected_cumulative_size": accuracy["truncate_dim"].to_numpy(dtype=float),
            "accuracy": accuracy["accuracy"].to_numpy(dtype=float),
            "accuracy_std": np.nan,
            "accuracy_ci_low": accuracy.get("ci_low", nan).to_numpy(dtype=float),
            "accuracy_ci_high": accuracy.get("ci_high", nan).to_numpy(dtype=float),
        }
    )


def oracle_points(oracle: pd.DataFrame, method: str = "oracle") -> pd.DataFrame:
    """Plane rows from :func:`~mrl_analysis.routing.oracle.oracle_summary` tables."""
    return pd.DataFrame(
        {
            "method": method,
            "label": oracle["model"].astype(str) + " oracle",
            "expected_size": oracle["oracle_expected_size"].to_numpy(),
            "expected_size_std": np.nan,
            "expected_cumulative_size": np.nan,
            "accuracy": oracle["oracle_accuracy"].to_numpy(),
            "accuracy_std": np.nan,
            "accuracy_ci_low": oracle.get("oracle_accuracy_ci_low", np.nan),
            "accuracy_ci_high": oracle.get("oracle_accuracy_ci_high", np.nan),
        }
    )


def tradeoff_points(
    *,
    studies: Mapping[str, CascadeStudy] | None = None,
    single_sizes: pd.DataFrame | None = None,
    oracle: pd.DataFrame | None = None,
    routers: Sequence[RouterStudy] = (),
    num_classes: int,
) -> pd.DataFrame:
    """Points of the accuracy-vs-cost plane (:data:`POINT_COLUMNS`).

    ``studies``: cascades; ``single_sizes``: per-size accuracy rows (one curve per
    model); ``oracle``: oracle summary rows (one star each); ``routers``: learned
    routers. Head multiply-adds: a cascade's own count; ``num_classes × size`` for a
    single size; ``num_classes × cumulative size`` for a router (separate MRL heads);
    none for the oracle.
    """
    parts = []
    for study in (studies or {}).values():
        s = study.summary()
        parts.append(
            study.points().assign(
                expected_cumulative_size_std=s["expected_cumulative_size_std"].to_numpy(),
                expected_head_macs=s["expected_head_macs_mean"].to_numpy(),
                expected_head_macs_std=s["expected_head_macs_std"].to_numpy(),
            )
        )
    if single_sizes is not None:
        p = single_size_points(single_sizes)
        parts.append(p.assign(expected_head_macs=p["expected_size"] * num_classes))
    if oracle is not None:
        parts.append(oracle_points(oracle).assign(expected_head_macs=np.nan))
    for router in routers:
        p = router.points()
        s = router.summary()
        parts.append(
            p.assign(
                expected_cumulative_size_std=s["expected_cumulative_size_std"].to_numpy(),
                expected_head_macs=p["expected_cumulative_size"] * num_classes,
                expected_head_macs_std=s["expected_cumulative_size_std"].to_numpy() * num_classes,
            )
        )
    if not parts:
        raise ValueError("nothing to plot: give studies, single_sizes, oracle or routers")
    return pd.concat(parts, ignore_index=True).reindex(columns=POINT_COLUMNS)


def size_reduction(
    points: pd.DataFrame, curve: str, baseline: str, tolerance: float = 0.0
) -> pd.DataFrame:
    """For each ``baseline`` point, the cheapest ``curve`` point at least as accurate.

    ``tolerance`` (a fraction, 0.001 = 0.1 points) loosens "as accurate". Columns:
    ``baseline_size, baseline_accuracy, matched_size, matched_accuracy, size_ratio``
    (baseline size / matched expected size: above 1 the curve is that many times
    smaller, below 1 it needs ``1 / size_ratio`` times the size; NaN where the curve never
    gets there) and ``baseline_dominated``: a smaller baseline point is at least as
    accurate, so a ratio against this one overstates the saving (say FF-512 below FF-8).
    """
    tolerance = check_fraction(tolerance, "tolerance")
    cur = points[points["method"] == curve].sort_values("expected_size")
    base = points[points["method"] == baseline].sort_values("expected_size")
    if cur.empty or base.empty:
        raise ValueError(f"points need rows for method {curve!r} and {baseline!r}")
    acc, size = cur["accuracy"].to_numpy(), cur["expected_size"].to_numpy()
    base_acc, base_size = base["accuracy"].to_numpy(), base["expected_size"].to_numpy()
    pick = cheapest_within(acc, size, base_acc, tolerance)
    found = pick >= 0
    matched_size = np.where(found, size[pick], np.nan)
    best_smaller = np.maximum.accumulate(np.concatenate([[-np.inf], base_acc[:-1]]))
    return pd.DataFrame(
        {
            "curve": curve,
            "baseline": baseline,
            "baseline_size": base_size,
            "baseline_accuracy": base_acc,
            "matched_size": matched_size,
            "matched_accuracy": np.where(found, acc[pick], np.nan),
            "size_ratio": base_size / matched_size,
            "baseline_dominated": best_smaller >= base_acc,
        }
    )


def size_reductions(
    points: pd.DataFrame, curves: Sequence[str], baseline: str, tolerance: float = 0.0
) -> pd.DataFrame:
    """:func:`size_reduction` of every curve in ``curves`` (repeats dropped) against one
    ``baseline``, stacked in that order."""
    tables = [size_reduction(points, c, baseline, tolerance) for c in dict.fromkeys(curves)]
    if not tables:
        raise ValueError("curves is empty: name at least one method of the points")
    return pd.concat(tables, ignore_index=True)


def best_reduction(reduction: pd.DataFrame) -> pd.Series | None:
    """The largest ``size_ratio`` of a :func:`size_reduction` table among the baseline
    points the curve reaches and no smaller baseline point matches (None if there is none)."""
    found = reduction.dropna(subset=["size_ratio"])
    found = found[~found["baseline_dominated"]]
    return None if found.empty else found.loc[found["size_ratio"].idxmax()]


def size_factor_text(ratio: float) -> str:
    """``ratio`` = reference size / size in words, true either way: ``"6.4× smaller"``,
    ``"needs 1.6× the size"`` (never "0.6× smaller"), or ``"the same size"``."""
    if not np.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"a size ratio is a positive number, got {ratio!r}")
    if round(ratio, 1) == 1.0 and round(1 / ratio, 1) == 1.0:
        return "the same size"
    return f"{ratio:.1f}× smaller" if ratio > 1 else f"needs {1 / ratio:.1f}× the size"
