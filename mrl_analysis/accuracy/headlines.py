"""Headlines of the per-size accuracy study: the numbers notebook 01 states.

"How small can a representation be?": per legend label and metric, the smallest size whose
accuracy is within ``tolerance`` of the label's largest size, with a bootstrap interval for
that size (:func:`mrl_analysis.core.stats.smallest_within_interval`, the library's one
within-tolerance rule applied to every resample). "Is 64 vs 128 real or noise?": per label
and metric, which steps between adjacent sizes an exact McNemar test on the same samples
finds significant (:func:`mrl_analysis.core.stats.adjacent_tests`). Accuracies and
``tolerance`` are fractions (``0.01`` = one point).
"""

from __future__ import annotations

import pandas as pd

from mrl_analysis.core.checks import check_table

HEADLINE_COLUMNS = ["headline", "label", "metric", "value", "text"]
#: Steps listed by name in a step headline before the rest are only counted.
_MAX_LISTED = 4


def _points(tolerance: float) -> str:
    """A fraction as accuracy points: ``0.01`` -> ``"1 point"``, ``0.005`` -> ``"0.5 points"``."""
    value = 100 * tolerance
    return f"{value:g} point" + ("" if value == 1 else "s")


def _dims(m: int) -> str:
    return f"{m} dim" if m == 1 else f"{m} dims"


def _span(low: int, high: int) -> str:
    return _dims(low) if low == high else f"{low}–{_dims(high)}"


def _smallest_sentence(r) -> str:
    head = f"{r.label} ({r.metric})"
    interval = f"95% interval of that size: {_span(r.ci_low_dim, r.ci_high_dim)}"
    if r.smallest_dim == r.reference_dim:
        return (
            f"{head}: no size below {_dims(r.reference_dim)} comes within "
            f"{_points(r.tolerance)} of its {r.reference_value:.1%} there ({interval})"
        )
    factor = r.reference_dim / r.smallest_dim
    return (
        f"{head}: {_dims(r.smallest_dim)} is the smallest size within {_points(r.tolerance)} "
        f"of (or above) its {_dims(r.reference_dim)} accuracy: {r.smallest_value:.1%} vs "
        f"{r.reference_value:.1%} ({interval}), {factor:.3g}× smaller"
    )


def size_headlines(smallest: pd.DataFrame) -> pd.DataFrame:
    """One sentence per label × metric of a ``SizeStudy.smallest`` table: the smallest size
    within ``tolerance`` of the largest size, its interval and the size factor.

    Columns :data:`HEADLINE_COLUMNS`: ``headline = "smallest_within_tolerance"``, ``value``
    (the smallest size) and ``text``.
    """
    needed = [
        "label",
        "metric",
        "reference_dim",
        "reference_value",
        "smallest_dim",
        "smallest_value",
        "ci_low_dim",
        "ci_high_dim",
        "tolerance",
    ]
    check_table(smallest, needed, "accuracy.study.size_study (its smallest table)")
    return pd.DataFrame(
        {
            "headline": "smallest_within_tolerance",
            "label": smallest["label"].to_numpy(),
            "metric": smallest["metric"].to_numpy(),
            "value": smallest["smallest_dim"].to_numpy(dtype=float),
            "text": [_smallest_sentence(r) for r in smallest.itertuples()],
        },
        columns=HEADLINE_COLUMNS,
    )


def _step(r) -> str:
    return f"{r.truncate_dim}→{r.next_dim} ({100 * r.delta:+.1f} points, p = {r.p_value:.2g})"


def step_headlines(tests: pd.DataFrame) -> pd.DataFrame:
    """One sentence per label × metric of a ``SizeStudy.tests`` table: which steps between
    adjacent sizes are noise (not significant) and where the last significant step is.

    ``headline = "noise_steps"``, ``value`` = the number of steps that are not significant.
    """
    rows = []
    for (label, metric), part in tests.groupby(["label", "metric"], sort=False):
        noise = part[~part["significant"].astype(bool)]
        real = part[part["significant"].astype(bool)]
        head = f"{label} ({metric}), McNemar between adjacent sizes:"
        if noise.empty:
            text = f"{head} every step is significant (p < 0.05)"
        else:
            listed = [_step(r) for r in noise.head(_MAX_LISTED).itertuples()]
            more = len(noise) - len(listed)
            steps = ", ".join(listed) + (f" and {more} more" if more else "")
            text = f"{head} not significant: {steps}"
            if not real.empty:
                text += f"; the last significant step is {_step(real.iloc[-1])}"
        rows.append(("noise_steps", label, metric, float(len(noise)), text))
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)
