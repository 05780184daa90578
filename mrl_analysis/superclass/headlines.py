"""Headlines of the superclass study: every number notebook 02 states, as small tables.

Each function takes tables of :mod:`mrl_analysis.superclass.metrics` /
:mod:`mrl_analysis.superclass.per_class` and returns one row per statement with the columns
``headline`` (a stable key), ``model``, ``metric``, ``truncate_dim``, ``value`` (the number
stated; accuracies and shares are fractions), the values it is built from, and ``text``
(the rendered sentence). "Smallest size as accurate as the best" goes through the library's
one rule, :func:`mrl_analysis.core.sizes.smallest_size_within`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.sizes import smallest_size_within
from mrl_analysis.superclass.metrics import paired_by_size
from mrl_analysis.superclass.per_class import TRENDS, relative_accuracy_outliers

_METRIC_NAMES = {
    "fine_accuracy": "fine accuracy",
    "superclass_accuracy": "superclass accuracy",
    "within_superclass_error_share": "share of errors inside the true superclass",
}


def _name(metric: str) -> str:
    return _METRIC_NAMES.get(metric, metric.replace("_", " "))


def _dims(m: int) -> str:
    return f"{m} dim" if m == 1 else f"{m} dims"


def _points(fraction: float, sign: bool = False) -> str:
    """A fraction as accuracy points: ``0.01`` -> ``"1 point"``, ``-0.023`` -> ``"-2.3 points"``."""
    value = 100 * fraction
    number = f"{value:+.1f}" if sign else f"{value:g}"
    return f"{number} point" + ("" if abs(value) == 1 else "s")


def _model_rows(table: pd.DataFrame, model: str, metric: str) -> pd.DataFrame:
    if metric not in table.columns:
        raise ValueError(f"the table has no column {metric!r}")
    rows = table[table["model"] == model].sort_values("truncate_dim", kind="stable")
    if rows.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(set(table.model))}")
    return rows


def size_headlines(
    overall: pd.DataFrame, model: str, metric: str, tolerance: float | None = None
) -> pd.DataFrame:
    """``metric`` of ``model`` at its smallest and largest size, where it is lowest and
    highest, and, with ``tolerance`` (a fraction), the smallest size within ``tolerance``
    of its best size.

    ``overall``: :func:`~mrl_analysis.superclass.metrics.superclass_accuracy` rows (the
    ``at_*`` sentences give the bootstrap interval when the table has one). Keys:
    ``at_smallest``, ``at_largest``, ``lowest``, ``highest`` and
    ``smallest_within_tolerance`` (``value`` is then that size's accuracy and
    ``reference_dim`` / ``reference_value`` the best size's).
    """
    rows = _model_rows(overall, model, metric)
    sizes = rows["truncate_dim"].to_numpy()
    values = rows[metric].to_numpy(dtype=float)
    name = _name(metric)
    nan = np.full(len(rows), np.nan)
    low = rows.get(f"{metric}_ci_low", pd.Series(nan)).to_numpy(dtype=float)
    high = rows.get(f"{metric}_ci_high", pd.Series(nan)).to_numpy(dtype=float)

    def interval(i: int) -> str:
        if not (np.isfinite(low[i]) and np.isfinite(high[i])):
            return ""
        return f" (95% interval {100 * low[i]:.1f}–{100 * high[i]:.1f}%)"

    picks = {
        "at_smallest": 0,
        "at_largest": len(sizes) - 1,
        "lowest": int(np.nanargmin(values)),
        "highest": int(np.nanargmax(values)),
    }
    out = [
        {
            "headline": key,
            "model": model,
            "metric": metric,
            "truncate_dim": int(sizes[i]),
            "value": float(values[i]),
            "text": (
                f"{model} at {_dims(int(sizes[i]))}: {name} {values[i]:.1%}{interval(i)}"
                if key.startswith("at_")
                else f"{model}: {key} {name} {values[i]:.1%} at {_dims(int(sizes[i]))}"
            ),
        }
        for key, i in picks.items()
    ]
    if tolerance is not None:
        tolerance = check_fraction(tolerance, "tolerance")
        s = smallest_size_within(rows, value=metric, reference="best", tolerance=tolerance).iloc[0]
        out.append(
            {
                "headline": "smallest_within_tolerance",
                "model": model,
                "metric": metric,
                "truncate_dim": int(s["smallest_dim"]),
                "value": float(s["smallest_value"]),
                "reference_dim": int(s["reference_dim"]),
                "reference_value": float(s["reference_value"]),
                "tolerance": tolerance,
                "text": (
                    f"{model}: {name} is within {_points(tolerance)} of its best "
                    f"({s['reference_value']:.1%} at {_dims(int(s['reference_dim']))}) from "
                    f"{_dims(int(s['smallest_dim']))} on ({s['smallest_value']:.1%})"
                ),
            }
        )
    return pd.DataFrame(out)


def paired_headlines(
    overall: pd.DataFrame,
    model: str,
    baseline: str,
    metrics: tuple[str, ...] = ("superclass_accuracy", "fine_accuracy"),
) -> pd.DataFrame:
    """``model`` minus ``baseline`` at every size both have, per metric (key
    ``difference``; ``value`` = the difference, with ``model_value`` and
    ``baseline_value``), sizes in increasing order."""
    parts = []
    for metric in metrics:
        pair = paired_by_size(overall, metric, model, baseline)
        parts.append(
            pd.DataFrame(
                {
                    "headline": "difference",
                    "model": model,
                    "baseline": baseline,
                    "metric": metric,
                    "truncate_dim": pair["truncate_dim"].astype(int),
                    "value": pair["difference"].astype(float),
                    "model_value": pair[model].astype(float),
                    "baseline_value": pair[baseline].astype(float),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True).sort_values("truncate_dim", kind="stable")
    out["text"] = [
        f"d = {r.truncate_dim}: {_name(r.metric)} {r.model_value:.1%} ({model}) vs "
        f"{r.baseline_value:.1%} ({baseline}): {_points(r.value, sign=True)}"
        for r in out.itertuples()
    ]
    return out.reset_index(drop=True)


def within_superclass_headlines(
    per_superclass: pd.DataFrame, members: pd.DataFrame
) -> pd.DataFrame:
    """Within-superclass accuracy of one model at its smallest and largest size, per
    superclass, by increasing gain (key ``within_superclass_gain``; ``value`` = the gain,
    with ``smallest_value`` / ``largest_value``), then one ``single_class`` row naming the
    superclasses of one class (always 100%), if any.

    ``per_superclass``: one model's
    :func:`~mrl_analysis.superclass.metrics.per_superclass_accuracy` rows; ``members``:
    :func:`~mrl_analysis.superclass.metrics.superclass_members`.
    """
    if per_superclass["model"].nunique() != 1:
        raise ValueError("within_superclass_headlines takes one model: filter the table first")
    model = per_superclass["model"].iloc[0]
    within = per_superclass.pivot(
        index="superclass", columns="truncate_dim", values="within_superclass_accuracy"
    )
    small, large = int(within.columns.min()), int(within.columns.max())
    gain = (within[large] - within[small]).sort_values(kind="stable")
    out = pd.DataFrame(
        {
            "headline": "within_superclass_gain",
            "model": model,
            "metric": "within_superclass_accuracy",
            "superclass": gain.index.to_numpy(),
            "truncate_dim": large,
            "value": gain.to_numpy(dtype=float),
            "smallest_dim": small,
            "smallest_value": within.loc[gain.index, small].to_numpy(dtype=float),
            "largest_value": within.loc[gain.index, large].to_numpy(dtype=float),
        }
    )
    out["text"] = [
        f"{model}, within {r.superclass}: {r.smallest_value:.1%} at {_dims(small)} → "
        f"{r.largest_value:.1%} at {_dims(large)} ({_points(r.value, sign=True)})"
        for r in out.itertuples()
    ]
    single = members.loc[members["n_classes"] == 1, "superclass"].tolist()
    if single:
        verb = "holds" if len(single) == 1 else "hold"
        note = {
            "headline": "single_class",
            "model": model,
            "metric": "within_superclass_accuracy",
            "value": float(len(single)),
            "superclass": ", ".join(single),
            "text": f"(always 100%: {', '.join(single)} {verb} a single class)",
        }
        out = pd.concat([out, pd.DataFrame([note])], ignore_index=True)
    return out


def trend_headlines(counts: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trend most classes follow (key ``most_common_trend``; ``value`` = its
    number of classes, with ``trend`` and ``n_classes_total``; ties go to the earlier trend
    of :data:`~mrl_analysis.superclass.per_class.TRENDS`).

    ``counts``: :func:`~mrl_analysis.superclass.per_class.trend_counts`.
    """
    rows = []
    for model, part in counts.groupby("model", sort=False):
        by_trend = part.set_index("trend")["n_classes"].reindex(TRENDS, fill_value=0)
        top = by_trend.idxmax()
        n, total = int(by_trend[top]), int(by_trend.sum())
        rows.append(
            {
                "headline": "most_common_trend",
                "model": model,
                "trend": top,
                "value": float(n),
                "n_classes_total": total,
                "text": f"{model}: {n} of {total} classes follow '{top}'",
            }
        )
    return pd.DataFrame(rows)


def outlier_headlines(per_class: pd.DataFrame, n: int = 1) -> pd.DataFrame:
    """The ``n`` classes of one model that gain most from smaller sizes (key
    ``small_size_outlier``; ``value`` = the class's mean relative accuracy over the sizes
    below the reference, with ``reference_size``). Empty for a model of one size.

    ``per_class``: one model's :func:`~mrl_analysis.superclass.per_class.per_class_accuracy`
    rows.
    """
    outliers = relative_accuracy_outliers(per_class, n)
    model = per_class["model"].iloc[0] if len(per_class) else ""
    reference = int(per_class["reference_size"].iloc[0]) if len(per_class) else 0
    out = pd.DataFrame(
        {
            "headline": "small_size_outlier",
            "model": model,
            "metric": "relative_accuracy",
            "class_name": outliers["class_name"].to_numpy(),
            "value": outliers["mean_relative_accuracy"].to_numpy(dtype=float),
            "reference_size": reference,
        }
    )
    out["text"] = [
        f"{model}: {r.class_name} on average {_points(r.value, sign=True)} vs "
        f"{model}-{reference} over the smaller sizes"
        for r in out.itertuples()
    ]
    return out
