"""Per-query outcomes of one search: k-NN votes and AP@k against literal definitions."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.diagnostic.search import normalized, query_outcomes, search_outcomes
from mrl_analysis.retrieval.metrics import query_metrics


def _case(seed=0, n_db=200, n_q=40, d=6, classes=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)) * 1.5
    dl, ql = rng.integers(0, classes, n_db), rng.integers(0, classes, n_q)
    db = centers[dl] + rng.normal(size=(n_db, d))
    q = centers[ql] + rng.normal(size=(n_q, d))
    return db, dl, q, ql


def test_ap_is_the_retrieval_themes_map():
    db, dl, q, ql = _case()
    ids = np.argsort(-(normalized(q) @ normalized(db).T), axis=1)[:, :25]
    ids[3, 4] = -1  # a missing result counts as a miss
    keys, values = query_metrics(ids, ql, dl, ks=(10, 25))
    ours10 = query_outcomes(ids, dl, ql, map_k=10)[1]
    ours25 = query_outcomes(ids, dl, ql, map_k=25)[1]
    np.testing.assert_allclose(ours10, values[keys.index(("map", 10))])
    np.testing.assert_allclose(ours25, values[keys.index(("map", 25))])
    np.testing.assert_allclose(
        query_outcomes(ids, dl, ql, map_k=10)[0], values[keys.index(("top1", 1))]
    )


def test_knn_majority_vote_with_ties_to_the_nearer_neighbour():
    dl = np.array([0, 1, 1, 2, 2, 0])
    ql = np.array([1, 2, 0, 0])
    ids = np.array(
        [
            [1, 0, 2],  # labels 1, 0, 1: majority 1
            [0, 3, 1],  # 0, 2, 1: three-way tie, nearest is 0
            [5, 3, 4],  # 0, 2, 2: majority 2
            [5, -1, 1],  # 0, missing, 1: tie between 0 and 1, nearest is 0
        ]
    )
    knn = query_outcomes(ids, dl, ql, knn_k=3, map_k=3)[0]
    np.testing.assert_array_equal(knn, [1, 0, 0, 1])


def test_search_outcomes_match_brute_force_cosine():
    db, dl, q, ql = _case(seed=1)
    got = search_outcomes(db, dl, q, ql, knn_k=5, map_k=10)
    sims = normalized(q) @ normalized(db).T
    order = np.argsort(-sims, axis=1, kind="stable")
    want = query_outcomes(order[:, :10], dl, ql, knn_k=5, map_k=10)
    np.testing.assert_allclose(got, want)
    assert got.shape == (2, len(q)) and 0.5 < got[0].mean() <= 1


def test_bad_inputs():
    db, dl, q, ql = _case()
    bad = q.copy()
    bad[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="queries holds 1 non-finite"):
        search_outcomes(db, dl, bad, ql)
    with pytest.raises(ValueError, match="d = 6 but queries d = 5"):
        search_outcomes(db, dl, q[:, :5], ql)
    with pytest.raises(ValueError, match=r"ids must be \[Q, >= 10\]"):
        query_outcomes(np.zeros((4, 3), dtype=np.int64), dl, ql[:4])
    with pytest.raises(TypeError, match="knn_k must be an integer"):
        query_outcomes(np.zeros((4, 10), dtype=np.int64), dl, ql[:4], knn_k=1.5)
