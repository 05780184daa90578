"""Retrieval metrics and cost, from ranked neighbour lists (paper §4.3, Appendix E).

Metrics, as the authors compute them, at ``k`` in ``{10, 25, 50, 100}``: ``top1`` (label
of the nearest neighbour), ``map`` (mAP@k: for each query the precision at every rank
``i <= k`` holding a hit, summed and divided by ``k``, not by the number of hits),
``precision`` (hits / k), ``recall`` (hits / number of database items of the query's class,
counted from the labels; the authors hard-code 1300) and ``hit_rate`` (at least one hit in
the top ``k``). The ANN view adds ``nn_recall`` (k-NN recall@k: the share of the ``k``
exact nearest neighbours at full size that the ranking's first ``k`` contain), when the
exact neighbours are given. All values are fractions in ``[0, 1]``, each the mean over
queries with a percentile bootstrap interval over queries (:mod:`mrl_analysis.core.stats`;
every row of a call shares the resamples, and calls with the same ``seed`` and number of
queries draw the same ones, so rows of different configurations stay paired).

Cost per query: :func:`retrieval_mflops` is the paper's theoretical exact-search cost in
millions of multiply-adds, ``(Ds·N + Σ Dr_i·K_i) / 1e6`` (reported for HNSW runs too, as
the paper does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_int, check_ks, check_labels
from mrl_analysis.core.stats import LEVEL, N_BOOT, mean_ci

__all__ = [
    "DEFAULT_KS",
    "METRICS",
    "metric_label",
    "query_metrics",
    "retrieval_metrics",
    "retrieval_mflops",
]

DEFAULT_KS: tuple[int, ...] = (10, 25, 50, 100)
METRICS: tuple[str, ...] = ("top1", "map", "precision", "recall", "hit_rate", "nn_recall")
_METRIC_NAMES = {
    "top1": "top-1",
    "map": "mAP",
    "precision": "P",
    "recall": "recall",
    "hit_rate": "hit rate",
    "nn_recall": "NN recall",
}


def metric_label(metric: str, k: int) -> str:
    """Display name of ``metric@k``: ``"top-1"``, ``"mAP@10"``, ``"P@25"``, ``"NN recall@10"``."""
    return "top-1" if metric == "top1" else f"{_METRIC_NAMES[metric]}@{k}"


def _neighbors(neighbors: np.ndarray, name: str) -> np.ndarray:
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"{name} must be a 2-D integer array [Nq, L], got {nb.dtype} {nb.shape}")
    return nb


def query_metrics(
    neighbors: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    exact: np.ndarray | None = None,
) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Every metric of every query: ``(keys, values)``, ``values [len(keys), Nq]`` float64.

    ``keys`` are ``(metric, k)``: ``("top1", 1)``, then per ``k`` ``map``, ``precision``,
    ``recall``, ``hit_rate`` and, when ``exact`` (``[Nq, L']`` exact full-size neighbour
    ids, best first) is given, ``nn_recall`` at the ``k <= L'``. ``neighbors`` is
    ``[Nq, L]`` database row ids, best first (``-1`` marks a missing result, as faiss
    returns, and counts as a miss); every ``k`` must be ``<= L``. A query whose class has no
    database item has recall NaN.
    """
    nb = _neighbors(neighbors, "neighbors")
    ql = check_labels(query_labels, nb.shape[0], "query_labels")
    dl = check_labels(database_labels, name="database_labels")
    ks = check_ks(ks)
    if ks[-1] > nb.shape[1]:
        raise ValueError(
            f"k={ks[-1]} exceeds the {nb.shape[1]} neighbours per query; retrieve at least "
            f"{ks[-1]} or drop the larger ks"
        )
    kmax = ks[-1]
    nb = nb[:, :kmax]
    if nb.size and (nb.max() >= len(dl) or nb.min() < -1):
        raise ValueError(f"neighbour ids must lie in -1..{len(dl) - 1} (database size {len(dl)})")
    valid = nb >= 0
    hits = valid & (dl[np.where(valid, nb, 0)] == ql[:, None])
    cum_hits = np.cumsum(hits, axis=1)
    # Precision at each rank that holds a hit, accumulated over ranks: the authors' AP
    # numerator; dividing by k (not by the hit count) is their normalization.
    ap_sums = np.cumsum(np.where(hits, cum_hits / np.arange(1, kmax + 1), 0.0), axis=1)
    classes, counts = np.unique(dl, return_counts=True)
    pos = np.clip(np.searchsorted(classes, ql), 0, max(len(classes) - 1, 0))
    relevant = np.where((len(classes) > 0) & (classes[pos] == ql), counts[pos], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_relevant = np.where(relevant > 0, 1.0 / np.maximum(relevant, 1), np.nan)

    keys: list[tuple[str, int]] = [("top1", 1)]
    rows = [hits[:, 0].astype(np.float64)]
    for k in ks:
        h = cum_hits[:, k - 1].astype(np.float64)
        keys += [("map", k), ("precision", k), ("recall", k), ("hit_rate", k)]
        rows += [ap_sums[:, k - 1] / k, h / k, h * inv_relevant, (h > 0).astype(np.float64)]
    if exact is not None:
        ex = _neighbors(exact, "exact")
        if ex.shape[0] != nb.shape[0]:
            raise ValueError(f"exact has {ex.shape[0]} rows for {nb.shape[0]} queries")
        for k in (k for k in ks if k <= ex.shape[1]):
            # [Nq, k, k] comparisons: ks are at most a few hundred, queries a few thousand.
            found = (nb[:, :k, None] == ex[:, None, :k]) & (nb[:, :k, None] >= 0)
            keys.append(("nn_recall", k))
            rows.append(found.any(axis=2).sum(axis=1) / k)
    return keys, np.stack(rows)


def retrieval_metrics(
    neighbors: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    exact: np.ndarray | None = None,
    n_boot: int | None = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean retrieval metrics of ranked neighbour lists, tidy ``(metric, k, value, ci_low,
    ci_high)``.

    The metrics of :func:`query_metrics` (same arguments), averaged over queries (recall
    over the queries whose class is in the database), with the ``level`` percentile
    bootstrap interval over queries from ``n_boot`` resamples (``None``: no interval, NaN).
    ``top1`` is reported with ``k = 1``.
    """
    keys, values = query_metrics(neighbors, query_labels, database_labels, ks, exact=exact)
    table = pd.DataFrame(keys, columns=["metric", "k"])
    defined = ~np.isnan(values)
    counts = defined.sum(axis=1)
    table["value"] = np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)
    table["ci_low"] = table["ci_high"] = np.nan
    if n_boot is None:
        return table
    n_boot = check_int(n_boot, "n_boot", low=1)
    # Recall is undefined for queries of a class absent from the database: its rows are
    # resampled over the other queries only (the same queries for every k).
    partial = ~defined.all(axis=1)
    for rows, cols in ((~partial, np.ones(values.shape[1], bool)), (partial, defined.all(0))):
        if rows.any() and cols.any():
            ci = mean_ci(values[np.ix_(rows, cols)], n_boot, level=level, seed=seed)
            table.loc[rows, "ci_low"] = ci["ci_low"].to_numpy()
            table.loc[rows, "ci_high"] = ci["ci_high"].to_numpy()
    return table


def retrieval_mflops(
    database_size: int,
    shortlist_dim: int,
    rerank_dims: Sequence[int] = (),
    shortlist_sizes: Sequence[int] = (),
) -> float:
    """Theoretical exact-search cost per query in millions of multiply-adds (paper's MFLOPs).

    ``Ds·N`` to shortlist plus ``Dr_i·K_i`` per rerank stage. Single-shot: no stages;
    adaptive: one stage ``(Dr, K)``; funnel: the cascade.

    >>> round(retrieval_mflops(1_281_167, 16, [32, 64, 128, 256, 2048], [200, 100, 50, 25, 10]), 2)
    20.54
    """
    if len(rerank_dims) != len(shortlist_sizes):
        raise ValueError(
            f"rerank_dims {list(rerank_dims)} and shortlist_sizes {list(shortlist_sizes)} "
            "must have the same length (one shortlist length per rerank stage)"
        )
    dims = [check_int(d, "rerank_dims entry", low=1) for d in rerank_dims]
    lengths = [check_int(k, "shortlist_sizes entry", low=1) for k in shortlist_sizes]
    rerank = sum(d * k for d, k in zip(dims, lengths, strict=True))
    n = check_int(database_size, "database_size", low=1)
    return (n * check_int(shortlist_dim, "shortlist_dim", low=1) + rerank) / 1e6
