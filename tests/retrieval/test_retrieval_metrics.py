"""Retrieval metrics by hand and against a per-query reference; the paper's MFLOPs."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import numpy_ranking, value

from mrl_analysis.core.stats import mean_ci
from mrl_analysis.retrieval.metrics import (
    metric_label,
    query_metrics,
    retrieval_metrics,
    retrieval_mflops,
)
from mrl_analysis.retrieval.synthetic import synthetic_nested


def test_metrics_hand_computed_example():
    database_labels = np.array([0, 0, 0, 1, 1, 2])  # class sizes 3, 2, 1
    query_labels = np.array([0, 1, 7])  # class 7 has no database item: no recall
    neighbors = np.array(
        [
            [0, 3, 1, 4, 2],  # hits 1 0 1 0 1
            [0, 1, 2, 5, 3],  # hits 0 0 0 0 1
            [5, 4, 3, -1, -1],  # no hits; -1 = missing result
        ]
    )
    table = retrieval_metrics(neighbors, query_labels, database_labels, ks=[2, 5])
    assert value(table, "top1", 1) == pytest.approx(1 / 3)
    # The authors' mAP@k: precision at each hit rank, summed, divided by k (not by hits).
    ap5_q0 = (1 / 1 + 2 / 3 + 3 / 5) / 5
    ap5_q1 = (1 / 5) / 5
    assert value(table, "map", 5) == pytest.approx((ap5_q0 + ap5_q1 + 0) / 3)
    standard_ap = ((1 + 2 / 3 + 3 / 5) / 3 + (1 / 5) / 1 + 0) / 3  # divided by hits instead
    assert value(table, "map", 5) != pytest.approx(standard_ap)
    assert value(table, "map", 2) == pytest.approx((1 / 2) / 3)
    assert value(table, "precision", 5) == pytest.approx((3 / 5 + 1 / 5 + 0) / 3)
    assert value(table, "precision", 2) == pytest.approx((1 / 2) / 3)
    # Recall divides by the query's class size in the database, over queries that have one.
    assert value(table, "recall", 5) == pytest.approx((3 / 3 + 1 / 2) / 2)
    assert value(table, "recall", 2) == pytest.approx((1 / 3 + 0) / 2)
    assert value(table, "hit_rate", 5) == pytest.approx(2 / 3)
    assert value(table, "hit_rate", 2) == pytest.approx(1 / 3)
    assert list(table.columns) == ["metric", "k", "value", "ci_low", "ci_high"]


def test_nn_recall_counts_the_exact_neighbours_found():
    database_labels = np.array([0, 0, 0, 1, 1, 2])
    neighbors = np.array([[0, 3, 1, 4, 2], [5, 4, 3, -1, -1]])
    exact = np.array([[1, 0, 2, 3, 4], [5, 4, 3, 2, 1]])
    keys, values = query_metrics(neighbors, [0, 1], database_labels, [2, 5], exact=exact)
    per_query = dict(zip(keys, values, strict=True))
    # Query 0: {0, 3} vs {1, 0} -> 1 of 2; all 5 found at k=5. Query 1: missing (-1) ids miss.
    np.testing.assert_allclose(per_query[("nn_recall", 2)], [0.5, 1.0])
    np.testing.assert_allclose(per_query[("nn_recall", 5)], [1.0, 0.6])
    assert ("nn_recall", 5) not in query_metrics(neighbors, [0, 1], database_labels, [5])[0]
    # Recall is NaN for a query whose class has no database item; its mean skips it.
    keys, values = query_metrics(neighbors, [0, 7], database_labels, [5])
    assert np.isnan(values[keys.index(("recall", 5)), 1])


def test_intervals_are_the_core_bootstrap_over_queries():
    rng = np.random.default_rng(0)
    database_labels = rng.integers(0, 5, 300)
    neighbors = rng.integers(0, 300, (80, 10))
    query_labels = rng.integers(0, 5, 80)
    table = retrieval_metrics(neighbors, query_labels, database_labels, [10], n_boot=500, seed=3)
    keys, values = query_metrics(neighbors, query_labels, database_labels, [10])
    ci = mean_ci(values, 500, seed=3)
    np.testing.assert_allclose(table["ci_low"], ci["ci_low"])
    np.testing.assert_allclose(table["ci_high"], ci["ci_high"])
    assert (table["ci_low"] < table["value"]).all() and (table["value"] < table["ci_high"]).all()
    plain = retrieval_metrics(neighbors, query_labels, database_labels, [10], n_boot=None)
    assert plain["ci_low"].isna().all()
    np.testing.assert_allclose(plain["value"], table["value"])
    # Queries of a class absent from the database leave recall's interval, not the others'.
    odd = query_labels.copy()
    odd[:5] = 9
    table = retrieval_metrics(neighbors, odd, database_labels, [10], n_boot=500, seed=3)
    keys, values = query_metrics(neighbors, odd, database_labels, [10])
    recall = table[table["metric"] == "recall"].iloc[0]
    expected = mean_ci(values[[keys.index(("recall", 10))], 5:], 500, seed=3).iloc[0]
    assert (recall["ci_low"], recall["ci_high"]) == (expected["ci_low"], expected["ci_high"])


def _reference_metrics(neighbors, query_labels, database_labels, k):
    """Straightforward per-query implementation of the same definitions."""
    maps, precs, recalls, anys = [], [], [], []
    for nb, label in zip(neighbors, query_labels, strict=True):
        hits = [database_labels[i] == label for i in nb[:k]]
        found, ap = 0, 0.0
        for rank, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                ap += found / rank
        maps.append(ap / k)
        precs.append(found / k)
        recalls.append(found / np.sum(database_labels == label))
        anys.append(found > 0)
    return np.mean(maps), np.mean(precs), np.mean(recalls), np.mean(anys)


def test_metrics_match_per_query_reference_on_brute_force_neighbours():
    database, database_labels, queries, query_labels = synthetic_nested(
        1500, 60, dim=32, num_classes=12, noise=1.2, seed=3
    )
    neighbors = numpy_ranking(queries, database, 8)[:, :25]
    table = retrieval_metrics(neighbors, query_labels, database_labels, ks=[1, 10, 25])
    assert value(table, "top1", 1) == pytest.approx(
        np.mean(database_labels[neighbors[:, 0]] == query_labels)
    )
    for k in (1, 10, 25):
        m, p, r, a = _reference_metrics(neighbors, query_labels, database_labels, k)
        assert value(table, "map", k) == pytest.approx(m)
        assert value(table, "precision", k) == pytest.approx(p)
        assert value(table, "recall", k) == pytest.approx(r)
        assert value(table, "hit_rate", k) == pytest.approx(a)


def test_metrics_reject_bad_input():
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="exceeds"):
        retrieval_metrics(np.zeros((1, 5), int), [0], labels, ks=[10])
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_metrics(np.array([[3]]), [0], labels, ks=[1])
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_metrics(np.zeros((2, 5), int), [0], labels, ks=[1])
    with pytest.raises(ValueError, match=r"ks values \[0\] must lie in >= 1"):
        retrieval_metrics(np.zeros((1, 5), int), [0], labels, ks=[0])
    with pytest.raises(TypeError, match="integer"):
        retrieval_metrics(np.zeros((1, 5), int), [0], labels, ks=[2.5])
    with pytest.raises(ValueError, match="2-D integer"):
        retrieval_metrics(np.zeros((1, 5)), [0], labels, ks=[1])


def test_mflops_match_the_papers_tables():
    n = 1_281_167  # ImageNet-1K train
    assert round(retrieval_mflops(n, 16)) == 20  # Table 8, Ds = 16
    assert round(retrieval_mflops(n, 16, [2048], [200])) == 21  # Table 11
    assert retrieval_mflops(n, 8, [16, 32, 64, 128, 2048], [200, 100, 50, 25, 10]) == (
        pytest.approx(10.28, abs=0.005)  # Table 13
    )
    with pytest.raises(ValueError, match="same length"):
        retrieval_mflops(n, 8, [16, 32], [200])


def test_metric_labels():
    assert [metric_label(m, 10) for m in ("top1", "map", "precision", "hit_rate")] == [
        "top-1",
        "mAP@10",
        "P@10",
        "hit rate@10",
    ]
    assert metric_label("nn_recall", 10) == "NN recall@10"


def test_sizes_are_integers_not_coerced():
    with pytest.raises(TypeError, match="shortlist_dim must be an integer"):
        retrieval_mflops(1000, 16.5)
    with pytest.raises(TypeError, match="rerank_dims entry must be an integer"):
        retrieval_mflops(1000, 16, [2048.0], [200])
