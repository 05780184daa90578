"""Are the first m dimensions the right m? Prefixes against PCA, random dims and the full size.

For every size m, one exact cosine search (:mod:`mrl_analysis.diagnostic.search`) of the
queries in the database for each *variant* of an m-dimensional representation:

============  ==============================================================================
prefix        the first m dimensions, L2-normalized after truncation (how MRL is deployed)
pca           the first m of the features rotated onto the database's principal directions
              (uncentered, i.e. the top right singular vectors: at m = d a pure rotation, so
              it equals the full embedding; the best m-dim projection for the retained norm)
random        m dimensions drawn at random (``n_random`` draws; mean over draws, with the
              spread of the draws' means)
norm-first    the first m of the vector normalized at full size, *not* renormalized: a common
              deployment bug (inner products of such prefixes are no cosines)
full          the whole embedding (one row, at m = d)
============  ==============================================================================

Every (variant, size) gives per-query outcomes (k-NN correct, AP@k); one bootstrap over the
queries with shared resamples (:func:`mrl_analysis.core.stats.bootstrap_means`) gives every
row its interval and keeps rows paired, so differences between variants and the smallest
adequate size get intervals from the same replicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_features, check_fraction, check_int, check_labels
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.stats import (
    LEVEL,
    N_BOOT,
    Bootstrap,
    bootstrap_means,
    percentile_interval,
    smallest_within_interval,
)
from mrl_analysis.diagnostic.search import OUTCOMES, neighbours, normalized, query_outcomes

VARIANTS: tuple[str, ...] = ("prefix", "pca", "random", "norm-first", "full")
#: Display names of the variants (figures, sentences).
VARIANT_LABELS = {
    "prefix": "first m dims",
    "pca": "top-m PCA dims",
    "random": "m random dims",
    "norm-first": "first m dims, not renormalized",
    "full": "full embedding",
}
QUALITY_COLUMNS = [
    "model",
    "variant",
    "truncate_dim",
    "metric",
    "metric_label",
    "value",
    "ci_low",
    "ci_high",
    "draw_min",
    "draw_max",
]


def metric_label(metric: str, knn_k: int, map_k: int) -> str:
    """``"1-NN accuracy"`` or ``"mAP@10"``."""
    return f"{knn_k}-NN accuracy" if metric == "knn" else f"mAP@{map_k}"


def principal_basis(database: np.ndarray) -> np.ndarray:
    """Orthonormal ``[d, d]`` basis of the database's principal directions, strongest first.

    Uncentered (eigenvectors of ``X^T X``, i.e. the right singular vectors of ``X``), so
    rotating onto all of it changes no inner product.
    """
    x = check_features(database, "database").astype(np.float64)
    values, vectors = np.linalg.eigh(x.T @ x)
    return vectors[:, np.argsort(values)[::-1]]


def random_dims(d: int, m: int, draws: int, seed: int) -> np.ndarray:
    """``[draws, m]`` sorted column indices, m distinct of ``d`` per draw (seeded)."""
    rng = np.random.default_rng([seed, d, m])
    return np.sort(np.argsort(rng.random((draws, d)), axis=1)[:, :m], axis=1)


@dataclass(frozen=True, eq=False)
class PrefixQuality:
    """Per-query outcomes of every variant and size, bootstrapped together.

    ``keys[i] = (variant, m, metric)`` names row ``i`` of ``boot`` (``"full"`` at m = d);
    ``draws[(m, metric)]``: the mean of each random draw.
    """

    keys: list[tuple[str, int, str]]
    boot: Bootstrap
    draws: dict[tuple[int, str], np.ndarray]
    sizes: list[int]
    dim: int
    queries: int
    knn_k: int
    map_k: int

    def rows(self, variant: str, metric: str) -> np.ndarray:
        """Indices into ``boot`` of ``variant`` at every size (ascending), for ``metric``."""
        where = {key: i for i, key in enumerate(self.keys)}
        return np.array([where[(variant, m, metric)] for m in self.sizes])

    def table(self, model: str = "model") -> pd.DataFrame:
        """The tidy table (:data:`QUALITY_COLUMNS`; values are fractions)."""
        low, high = self.boot.interval()
        nan = float("nan")
        rows = [
            {
                "model": model,
                "variant": variant,
                "truncate_dim": m,
                "metric": metric,
                "metric_label": metric_label(metric, self.knn_k, self.map_k),
                "value": self.boot.mean[i],
                "ci_low": low[i],
                "ci_high": high[i],
                "draw_min": float(self.draws[(m, metric)].min()) if variant == "random" else nan,
                "draw_max": float(self.draws[(m, metric)].max()) if variant == "random" else nan,
            }
            for i, (variant, m, metric) in enumerate(self.keys)
        ]
        return pd.DataFrame(rows, columns=QUALITY_COLUMNS)

    def difference(
        self, variant: str, other: str, metric: str, sizes: Sequence[int]
    ) -> tuple[float, float, float]:
        """Mean over ``sizes`` of ``variant - other`` for ``metric``, with its interval
        (the same replicates: a paired comparison)."""
        pick = np.isin(self.sizes, list(sizes))
        if not pick.any():
            raise ValueError(f"sizes {list(sizes)} are none of {self.sizes}")
        a, b = self.rows(variant, metric)[pick], self.rows(other, metric)[pick]
        value = float((self.boot.mean[a] - self.boot.mean[b]).mean())
        reps = (self.boot.replicates[a] - self.boot.replicates[b]).mean(axis=0)
        low, high = percentile_interval(reps, self.boot.level)
        return value, float(low), float(high)

    def series(self, variant: str, metric: str, sizes: Sequence[int]) -> Bootstrap:
        """``variant``'s means and replicates at ``sizes`` (each one of :attr:`sizes`)."""
        where = {key: i for i, key in enumerate(self.keys)}
        missing = [m for m in sizes if (variant, m, metric) not in where]
        if missing:
            raise ValueError(f"sizes {missing} are none of {self.sizes}")
        rows = np.array([where[(variant, m, metric)] for m in sizes], dtype=int)
        return Bootstrap(self.boot.mean[rows], self.boot.replicates[rows], self.boot.level)

    def smallest_within(self, metric: str, tolerance: float) -> dict[str, float]:
        """The smallest prefix size within ``tolerance`` of the full embedding's ``metric``,
        with its interval (:func:`mrl_analysis.core.stats.smallest_within_interval`)."""
        rows = self.rows("prefix", metric)
        boot = Bootstrap(self.boot.mean[rows], self.boot.replicates[rows], self.boot.level)
        return smallest_within_interval(boot, self.sizes, tolerance)


def prefix_quality(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    sizes: Sequence[int],
    *,
    n_random: int = 5,
    knn_k: int = 1,
    map_k: int = 10,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
    model: str = "model",
    progress: bool = True,
) -> PrefixQuality:
    """Every variant (module docstring) at every size of ``sizes`` (the full size ``d`` is
    added when missing); ``n_random`` random draws per size; bootstrap with ``n_boot``
    resamples of the queries at ``level``, seeded by ``seed`` (as are the random draws)."""
    db = check_features(database, "database")
    q = check_features(queries, "queries")
    if db.shape[1] != q.shape[1]:
        raise ValueError(f"database has d = {db.shape[1]} but queries d = {q.shape[1]}")
    d = db.shape[1]
    dl = check_labels(database_labels, db.shape[0], "database_labels")
    ql = check_labels(query_labels, q.shape[0], "query_labels")
    n_random = check_int(n_random, "n_random", low=1)
    check_fraction(level, "level", allow_one=False)
    wanted = {check_int(m, "sizes", low=1, high=d) for m in sizes}
    grid = sorted(wanted | {d})
    top = max(knn_k, map_k)
    if top > db.shape[0]:
        raise ValueError(f"the database has {db.shape[0]} items, fewer than k = {top}")

    def outcomes(db_m: np.ndarray, q_m: np.ndarray, *, renormalize: bool = True) -> np.ndarray:
        if renormalize:
            db_m, q_m = normalized(db_m), normalized(q_m)
        ids = neighbours(db_m, q_m, top)
        return query_outcomes(ids, dl, ql, knn_k=knn_k, map_k=map_k)

    basis = principal_basis(db).astype(np.float32)
    db_rot, q_rot = db @ basis, q @ basis
    db_unit, q_unit = normalized(db), normalized(q)
    keys: list[tuple[str, int, str]] = []
    rows: list[np.ndarray] = []
    draws: dict[tuple[int, str], np.ndarray] = {}

    def add(variant: str, m: int, values: np.ndarray) -> None:
        for metric, row in zip(OUTCOMES, values, strict=True):
            keys.append((variant, m, metric))
            rows.append(row)

    full = outcomes(db, q)
    bar = progress_bar(grid, desc=f"prefixes vs PCA · {model}", unit="size", disable=not progress)
    for m in bar:
        if m == d:
            # Every variant is the full embedding at m = d (PCA: a rotation; random: all
            # dims), so the full search stands for all of them (spread: none).
            for variant in ("prefix", "pca", "random", "norm-first"):
                add(variant, m, full)
            for metric, row in zip(OUTCOMES, full, strict=True):
                draws[(m, metric)] = np.full(n_random, row.mean())
            continue
        add("prefix", m, outcomes(db[:, :m], q[:, :m]))
        add("pca", m, outcomes(db_rot[:, :m], q_rot[:, :m]))
        per_draw = np.stack(
            [outcomes(db[:, cols], q[:, cols]) for cols in random_dims(d, m, n_random, seed)]
        )  # [R, 2, Q]
        add("random", m, per_draw.mean(axis=0))
        for metric, means in zip(OUTCOMES, per_draw.mean(axis=2).T, strict=True):
            draws[(m, metric)] = means
        add("norm-first", m, outcomes(db_unit[:, :m], q_unit[:, :m], renormalize=False))
    add("full", d, full)
    boot = bootstrap_means(np.stack(rows), n_boot, level=level, seed=seed)
    return PrefixQuality(keys, boot, draws, grid, d, q.shape[0], knn_k, map_k)
