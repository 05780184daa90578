"""The "cheapest size within tolerance" rule, defined once.

A size (or any configuration with a cost) is *as good as* a reference when its value is at
least the reference's minus ``tolerance``; values and tolerance share one unit, fractions
in [0, 1] for accuracies and rates (``tolerance=0.01`` is one point). Among the candidates
that are as good, the cheapest wins. Per-size accuracy (smallest adequate size), few-shot
saturation, cascades against FF models and adaptive retrieval against single-shot search
all ask this one question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction


def as_good(values: np.ndarray, reference: np.ndarray | float, tolerance: float) -> np.ndarray:
    """The rule itself: ``values >= reference - tolerance`` (broadcasting)."""
    return np.asarray(values) >= np.asarray(reference) - tolerance


def cheapest_within(
    values: Sequence[float] | np.ndarray,
    costs: Sequence[float] | np.ndarray,
    references: float | Sequence[float] | np.ndarray,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Index of the cheapest candidate as good as each reference (``-1`` where none is).

    ``values`` / ``costs``: one per candidate; ``references``: one value or many. Ties in
    cost go to the earlier candidate. Returns int64 of the shape of ``references``.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    if v.shape != c.shape or v.ndim != 1:
        raise ValueError(f"values and costs must be 1-D of one length, got {v.shape}, {c.shape}")
    refs = np.asarray(references, dtype=np.float64)
    order = np.argsort(c, kind="stable")
    ok = as_good(v[order][None, :], refs.reshape(-1, 1), tolerance)
    first = ok.argmax(axis=1)
    found = ok.any(axis=1)
    return np.where(found, order[first] if len(order) else -1, -1).reshape(refs.shape)


Reference = Literal["largest", "best"]


def smallest_size_within(
    table: pd.DataFrame,
    *,
    by: Sequence[str] = (),
    size: str = "truncate_dim",
    value: str = "accuracy",
    reference: Reference = "largest",
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Per group of ``by``: the smallest size as good as the reference size.

    ``reference="largest"`` compares with the largest size of the group (the full
    embedding), ``"best"`` with the group's best size. Columns: the ``by`` keys,
    ``reference_dim``, ``reference_value``, ``smallest_dim``, ``smallest_value`` and
    ``reduction`` (reference size / smallest size: "as good at k× smaller").
    """
    if reference not in ("largest", "best"):
        raise ValueError(f"reference must be 'largest' or 'best', got {reference!r}")
    missing = {size, value, *by} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}")
    if table.empty:
        raise ValueError("table is empty: nothing to compare")
    rows = []
    groups = table.groupby(list(by), sort=False, dropna=False) if by else [((), table)]
    for key, group in groups:
        group = group.sort_values(size)
        sizes, vals = group[size].to_numpy(), group[value].to_numpy(dtype=np.float64)
        ref = len(vals) - 1 if reference == "largest" else int(np.nanargmax(vals))
        pick = int(cheapest_within(vals, sizes, vals[ref], tolerance))
        keys = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(by, keys, strict=True)),
                "reference_dim": int(sizes[ref]),
                "reference_value": float(vals[ref]),
                "smallest_dim": int(sizes[pick]),
                "smallest_value": float(vals[pick]),
                "reduction": float(sizes[ref]) / float(sizes[pick]),
            }
        )
    return pd.DataFrame(rows)
