"""Per-query quality of one representation: k-NN correctness and AP@k from one faiss search.

Vectors are L2-normalized rows; the search is exact inner product (``faiss.knn``), i.e. cosine
similarity. For each query it returns

* ``knn``: whether the majority label of its ``knn_k`` nearest database items is its own
  (ties go to the label of the nearer neighbour), as 0 / 1;
* ``map``: AP@k as the paper's authors compute it (the retrieval theme's definition, kept in
  step by a test): the precision at every rank ``i <= k`` that holds an item of the query's
  class, summed and divided by ``k``.

Both are per-query rows, so every statistic built from them (means, differences between
representations, the smallest adequate size) is bootstrapped over the same queries.
"""

from __future__ import annotations

import faiss
import numpy as np

from mrl_analysis.core.checks import check_features, check_int, check_labels

#: Row names of :func:`query_outcomes`.
OUTCOMES: tuple[str, ...] = ("knn", "map")


def normalized(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of ``x`` with unit rows (zero rows stay zero)."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.where(norms > 0, norms, 1.0)
    return out


def neighbours(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids ``[Q, k]`` of the ``k`` largest inner products of each query (exact, faiss)."""
    db = np.ascontiguousarray(database, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, ids = faiss.knn(q, db, k, metric=faiss.METRIC_INNER_PRODUCT)
    return ids


def query_outcomes(
    ids: np.ndarray,
    database_labels: np.ndarray,
    query_labels: np.ndarray,
    *,
    knn_k: int = 1,
    map_k: int = 10,
) -> np.ndarray:
    """``[2, Q]`` float64: rows :data:`OUTCOMES` (k-NN correct, AP@``map_k``) per query.

    ``ids [Q, L]`` are database rows, best first (``-1``: none found, a miss); ``L`` must
    cover ``max(knn_k, map_k)``.
    """
    ids = np.asarray(ids)
    knn_k = check_int(knn_k, "knn_k", low=1)
    map_k = check_int(map_k, "map_k", low=1)
    if ids.ndim != 2 or ids.shape[1] < max(knn_k, map_k):
        raise ValueError(f"ids must be [Q, >= {max(knn_k, map_k)}], got shape {ids.shape}")
    dl = check_labels(database_labels, name="database_labels")
    ql = check_labels(query_labels, ids.shape[0], "query_labels")
    valid = ids >= 0
    found = np.where(valid, dl[np.where(valid, ids, 0)], -1)
    hits = found[:, :map_k] == ql[:, None]
    precision = np.cumsum(hits, axis=1) / np.arange(1, map_k + 1)
    ap = np.where(hits, precision, 0.0).sum(axis=1) / map_k
    top = found[:, :knn_k]
    if knn_k == 1:
        vote = top[:, 0]
    else:
        # Votes per (query, label), offset so one bincount counts them all; a tie goes to
        # the label whose first vote came earliest (the nearer neighbour).
        n_labels = int(max(dl.max(initial=0), ql.max(initial=0))) + 2
        shifted = top + 1  # -1 (missing) becomes label 0, never a real label
        flat = (np.arange(len(top))[:, None] * n_labels + shifted).ravel()
        counts = np.bincount(flat, minlength=len(top) * n_labels).reshape(len(top), n_labels)
        counts[:, 0] = 0
        first = np.full((len(top), n_labels), knn_k)
        rank = np.broadcast_to(np.arange(knn_k), top.shape)
        np.minimum.at(first, (np.arange(len(top))[:, None].repeat(knn_k, 1), shifted), rank)
        score = counts * (knn_k + 1) - first
        vote = score.argmax(axis=1) - 1
    return np.stack([(vote == ql).astype(np.float64), ap])


def search_outcomes(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    *,
    knn_k: int = 1,
    map_k: int = 10,
) -> np.ndarray:
    """:func:`query_outcomes` of an exact cosine search of ``queries`` in ``database``
    (both ``[*, m]``, normalized here)."""
    db = check_features(database, "database")
    q = check_features(queries, "queries")
    if db.shape[1] != q.shape[1]:
        raise ValueError(f"database has d = {db.shape[1]} but queries d = {q.shape[1]}")
    ids = neighbours(normalized(db), normalized(q), max(knn_k, map_k))
    return query_outcomes(ids, database_labels, query_labels, knn_k=knn_k, map_k=map_k)
