"""Reference implementations the retrieval tests compare the library with (numpy, float64)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def value(table: pd.DataFrame, metric: str, k: int) -> float:
    """The one value of ``metric@k`` in a ``(metric, k, value)`` table."""
    row = table[(table["metric"] == metric) & (table["k"] == k)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_ranking(queries: np.ndarray, database: np.ndarray, m: int) -> np.ndarray:
    """All database rows by exact L2 distance at size m, in float64."""
    q, db = normalize(queries[:, :m]), normalize(database[:, :m])
    dist = (q * q).sum(1)[:, None] + (db * db).sum(1)[None] - 2 * q @ db.T
    return np.argsort(dist, axis=1, kind="stable")
