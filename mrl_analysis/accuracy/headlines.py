"""Headlines of the per-size accuracy study: the numbers notebook 01 states.

"How small can a representation be?": per legend label and metric, the smallest size whose
accuracy is within ``tolerance`` of the label's best size, through the library's one rule
(:func:`mrl_analysis.core.sizes.smallest_size_within`). Accuracies and ``tolerance`` are
fractions (``0.01`` = one point).
"""

from __future__ import annotations

import pandas as pd

from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.sizes import smallest_size_within

HEADLINE_COLUMNS = [
    "headline",
    "label",
    "metric",
    "value",
    "reference_dim",
    "reference_value",
    "smallest_dim",
    "smallest_value",
    "reduction",
    "tolerance",
    "text",
]


def _points(tolerance: float) -> str:
    """A fraction as accuracy points: ``0.01`` -> ``"1 point"``, ``0.005`` -> ``"0.5 points"``."""
    value = 100 * tolerance
    return f"{value:g} point" + ("" if value == 1 else "s")


def _sentence(r) -> str:
    best = f"its best ({r.reference_value:.1%} at {r.reference_dim} dims)"
    if r.smallest_dim == r.reference_dim:
        return (
            f"{r.label} ({r.metric}): no smaller size comes within {_points(r.tolerance)} of {best}"
        )
    return (
        f"{r.label} ({r.metric}): {r.smallest_value:.1%} at {r.smallest_dim} dims, within "
        f"{_points(r.tolerance)} of {best}: {r.reduction:.3g}× smaller"
    )


def size_headlines(
    table: pd.DataFrame, tolerance: float = 0.01, *, metric: str | None = None
) -> pd.DataFrame:
    """Per ``label`` x ``metric`` of an accuracy table: the smallest size as accurate as the
    best size within ``tolerance`` (the paper's "as accurate at k× smaller size").

    ``table``: rows of :mod:`mrl_analysis.accuracy.metrics` (``value`` a fraction);
    ``metric`` keeps one metric only. One row per label and metric, in table order:
    ``headline = "smallest_within_tolerance"``, ``value`` (the smallest size), the best
    (``reference_*``) and the smallest size with their accuracies, ``reduction`` (best size
    / smallest size), ``tolerance`` and the rendered sentence ``text``.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    rows = table if metric is None else table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(
            f"no rows with metric {metric!r}; the table has {sorted(table['metric'].unique())}"
        )
    out = smallest_size_within(
        rows,
        by=("label", "metric"),
        value="value",
        reference="best",
        tolerance=tolerance,
    )
    out = out.assign(
        headline="smallest_within_tolerance", value=out["smallest_dim"], tolerance=tolerance
    )
    out["text"] = [_sentence(r) for r in out.itertuples()]
    return out[HEADLINE_COLUMNS]
