"""Retrieval metrics and cost, from ranked neighbour lists (paper §4.3, Appendix E).

Metrics, as the authors compute them, at ``k`` in ``{10, 25, 50, 100}``: ``top1`` (label
of the nearest neighbour), ``map`` (mAP@k: for each query the precision at every rank
``i <= k`` holding a hit, summed and divided by ``k``, not by the number of hits),
``precision`` (hits / k), ``recall`` (hits / number of database items of the query's class,
counted from the labels; the authors hard-code 1300) and ``hit_rate`` (at least one hit in
the top ``k``). All values are fractions in ``[0, 1]``.

Cost per query: :func:`retrieval_mflops` is the paper's theoretical exact-search cost in
millions of multiply-adds, ``(Ds·N + Σ Dr_i·K_i) / 1e6`` (reported for HNSW runs too, as
the paper does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_ks, check_labels

__all__ = ["DEFAULT_KS", "METRICS", "metric_label", "retrieval_metrics", "retrieval_mflops"]

DEFAULT_KS: tuple[int, ...] = (10, 25, 50, 100)
METRICS: tuple[str, ...] = ("top1", "map", "precision", "recall", "hit_rate")
_METRIC_NAMES = {
    "top1": "top-1",
    "map": "mAP",
    "precision": "P",
    "recall": "recall",
    "hit_rate": "hit rate",
}


def metric_label(metric: str, k: int) -> str:
    """Display name of ``metric@k``: ``"top-1"``, ``"mAP@10"``, ``"P@25"``, ``"hit rate@100"``."""
    return "top-1" if metric == "top1" else f"{_METRIC_NAMES[metric]}@{k}"


def retrieval_metrics(
    neighbors: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
) -> pd.DataFrame:
    """Mean retrieval metrics of ranked neighbour lists, tidy ``(metric, k, value)``.

    ``neighbors`` is ``[Nq, L]`` database row ids, best first (``-1`` marks a missing
    result, as faiss returns, and counts as a miss); every ``k`` must be ``<= L``.
    ``top1`` is reported with ``k = 1``; ``map``, ``precision``, ``recall`` and
    ``hit_rate`` at each ``k`` (definitions in the module docstring). Queries whose class
    has no database item have no recall and are left out of its mean.
    """
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(
            f"neighbors must be a 2-D integer array [Nq, L], got {nb.dtype} {nb.shape}"
        )
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
    has_class = relevant > 0

    rows = [("top1", 1, float(hits[:, 0].mean()) if len(ql) else math.nan)]
    for k in ks:
        h = cum_hits[:, k - 1]
        recall = float((h[has_class] / relevant[has_class]).mean()) if has_class.any() else math.nan
        rows += [
            ("map", k, float((ap_sums[:, k - 1] / k).mean())),
            ("precision", k, float((h / k).mean())),
            ("recall", k, recall),
            ("hit_rate", k, float((h > 0).mean())),
        ]
    return pd.DataFrame(rows, columns=["metric", "k", "value"])


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
    rerank = sum(int(d) * int(k) for d, k in zip(rerank_dims, shortlist_sizes, strict=True))
    return (int(database_size) * int(shortlist_dim) + rerank) / 1e6
