"""Retrieval: metrics by hand and against numpy brute force, AR / funnel identities, HNSW."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.models.network import build_model
from mrl_analysis.retrieval.pipelines import (
    TABLE_COLUMNS,
    Funnel,
    Retriever,
    adaptive_table,
    as_accurate_speedup,
    default_funnels,
    evaluate_models,
    evaluate_retrieval,
    plot_cost_tradeoff,
    plot_metric_vs_size,
    plot_shortlist_ablation,
    query_subset,
    retrieval_metrics,
    retrieval_mflops,
    single_shot_table,
    synthetic_nested,
)


def _value(table: pd.DataFrame, metric: str, k: int) -> float:
    row = table[(table["metric"] == metric) & (table["k"] == k)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def _normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_ranking(queries: np.ndarray, database: np.ndarray, m: int) -> np.ndarray:
    """All database rows by exact L2 distance at size m, in float64."""
    q, db = _normalize(queries[:, :m]), _normalize(database[:, :m])
    dist = (q * q).sum(1)[:, None] + (db * db).sum(1)[None] - 2 * q @ db.T
    return np.argsort(dist, axis=1, kind="stable")


@pytest.fixture(scope="module")
def data():
    return synthetic_nested(1500, 60, dim=32, num_classes=12, noise=1.2, seed=3)


# ----------------------------------------------------------------------------- metrics


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
    assert _value(table, "top1", 1) == pytest.approx(1 / 3)
    # The authors' mAP@k: precision at each hit rank, summed, divided by k (not by hits).
    ap5_q0 = (1 / 1 + 2 / 3 + 3 / 5) / 5
    ap5_q1 = (1 / 5) / 5
    assert _value(table, "map", 5) == pytest.approx((ap5_q0 + ap5_q1 + 0) / 3)
    standard_ap = ((1 + 2 / 3 + 3 / 5) / 3 + (1 / 5) / 1 + 0) / 3  # divided by hits instead
    assert _value(table, "map", 5) != pytest.approx(standard_ap)
    assert _value(table, "map", 2) == pytest.approx((1 / 2) / 3)
    assert _value(table, "precision", 5) == pytest.approx((3 / 5 + 1 / 5 + 0) / 3)
    assert _value(table, "precision", 2) == pytest.approx((1 / 2) / 3)
    # Recall divides by the query's class size in the database, over queries that have one.
    assert _value(table, "recall", 5) == pytest.approx((3 / 3 + 1 / 2) / 2)
    assert _value(table, "recall", 2) == pytest.approx((1 / 3 + 0) / 2)
    assert _value(table, "hit_rate", 5) == pytest.approx(2 / 3)
    assert _value(table, "hit_rate", 2) == pytest.approx(1 / 3)
    assert list(table.columns) == ["metric", "k", "value"]


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


def test_metrics_match_per_query_reference_on_brute_force_neighbours(data):
    database, database_labels, queries, query_labels = data
    neighbors = _numpy_ranking(queries, database, 8)[:, :25]
    table = retrieval_metrics(neighbors, query_labels, database_labels, ks=[1, 10, 25])
    assert _value(table, "top1", 1) == pytest.approx(
        np.mean(database_labels[neighbors[:, 0]] == query_labels)
    )
    for k in (1, 10, 25):
        m, p, r, a = _reference_metrics(neighbors, query_labels, database_labels, k)
        assert _value(table, "map", k) == pytest.approx(m)
        assert _value(table, "precision", k) == pytest.approx(p)
        assert _value(table, "recall", k) == pytest.approx(r)
        assert _value(table, "hit_rate", k) == pytest.approx(a)


def test_metrics_reject_bad_input():
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="exceeds"):
        retrieval_metrics(np.zeros((1, 5), int), [0], labels, ks=[10])
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_metrics(np.array([[3]]), [0], labels, ks=[1])
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(np.zeros((2, 5), int), [0], labels, ks=[1])
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(np.zeros((1, 5), int), [0], labels, ks=[0])


def test_mflops_match_the_papers_tables():
    n = 1_281_167  # ImageNet-1K train
    assert round(retrieval_mflops(n, 16)) == 20  # Table 8, Ds = 16
    assert round(retrieval_mflops(n, 16, [2048], [200])) == 21  # Table 11
    assert retrieval_mflops(n, 8, [16, 32, 64, 128, 2048], [200, 100, 50, 25, 10]) == (
        pytest.approx(10.28, abs=0.005)  # Table 13
    )
    with pytest.raises(ValueError, match="same length"):
        retrieval_mflops(n, 8, [16, 32], [200])


# ----------------------------------------------------------------------------- search


def test_flat_search_matches_numpy_brute_force(data):
    database, _, queries, _ = data
    retriever = Retriever(database)
    for m in (4, 11, 32):
        expected = _numpy_ranking(queries, database, m)[:, :20]
        np.testing.assert_array_equal(retriever.search(queries, m, 20), expected)


def test_rerank_matches_numpy_and_puts_missing_last(data):
    database, _, queries, _ = data
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.permutation(len(database))[:30] for _ in queries])
    candidates[:, 5] = -1
    reranked = Retriever(database).rerank(queries, candidates, 16)
    assert (reranked[:, -1] == -1).all()
    q, db = _normalize(queries[:, :16]), _normalize(database[:, :16])
    for row, cand in zip(range(len(queries)), candidates, strict=True):
        ids = cand[cand >= 0]
        order = np.argsort(((db[ids] - q[row]) ** 2).sum(1), kind="stable")
        np.testing.assert_array_equal(reranked[row, :-1], ids[order])


def test_adaptive_at_full_size_equals_single_shot(data):
    database, labels, queries, query_labels = data
    retriever = Retriever(database, labels)
    single = retriever.search(queries, None, 50)
    np.testing.assert_array_equal(retriever.adaptive(queries, 32, 32, 50), single)
    np.testing.assert_array_equal(retriever.adaptive(queries, None, None, 50), single)


def test_funnel_with_one_stage_equals_adaptive(data):
    database, _, queries, _ = data
    retriever = Retriever(database)
    adaptive = retriever.adaptive(queries, 4, 16, 100)
    funnel = retriever.funnel(queries, Funnel(4, (16,), (100,)))
    np.testing.assert_array_equal(funnel, adaptive)
    assert not np.array_equal(adaptive, retriever.search(queries, 4, 100))


def test_funnel_cascade_matches_a_numpy_cascade(data):
    database, _, queries, _ = data
    funnel = Funnel(4, (8, 16, 32), (80, 40, 10))
    got = Retriever(database).funnel(queries, funnel)
    ranking = _numpy_ranking(queries, database, 4)[:, :80]
    for dim, keep in zip(funnel.rerank_dims, funnel.shortlist_sizes, strict=True):
        q, db = _normalize(queries[:, :dim]), _normalize(database[:, :dim])
        for row in range(len(queries)):
            head = ranking[row, :keep]
            ranking[row, :keep] = head[np.argsort(((db[head] - q[row]) ** 2).sum(1))]
    assert got.shape == (len(queries), 80)
    np.testing.assert_array_equal(got, ranking)


def test_hnsw_recall_against_exact_is_above_095():
    # Stated bound: HNSW32 (efSearch 64) finds >= 95% of the exact top-10 on 4000 items.
    database, labels, queries, _ = synthetic_nested(4000, 100, dim=32, num_classes=20, seed=1)
    exact = Retriever(database).search(queries, 16, 10)
    approx = Retriever(database, index="hnsw", hnsw_m=32, ef_search=64).search(queries, 16, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_database_is_never_copied_and_full_size_copy_is_reused_when_normalized(data):
    database = data[0]
    retriever = Retriever(database)
    assert retriever.database is database
    before = database.copy()
    retriever.search(database[:5], None, 3)
    np.testing.assert_array_equal(database, before)  # normalization happened in a copy
    assert not np.shares_memory(retriever.vectors(None), database)

    normalized = synthetic_nested(200, 1, dim=16, num_classes=3, normalize=True)[0]
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1, rtol=1e-5)
    r = Retriever(normalized)
    assert np.shares_memory(r.vectors(16), normalized)
    assert not np.shares_memory(r.vectors(8), normalized)
    assert r.vectors(8).shape == (200, 8) and r.vectors(8).flags.c_contiguous
    indexes = r.index_table().set_index("truncate_dim")
    assert indexes.loc[16, "shares_database"] and indexes.loc[16, "memory_mb"] == 0
    assert indexes.loc[8, "memory_mb"] == pytest.approx(200 * 8 * 4 / 2**20)


def test_retriever_rejects_bad_input(data):
    database, labels, queries, query_labels = data
    with pytest.raises(ValueError, match="truncate_dim"):
        Retriever(database).search(queries, 64, 5)
    with pytest.raises(ValueError, match="queries must be"):
        Retriever(database).search(queries[:, :8], 8, 5)
    with pytest.raises(ValueError, match="database size"):
        Retriever(database).search(queries, 8, len(database) + 1)
    with pytest.raises(ValueError, match="unknown index"):
        Retriever(database, index="ivf")
    with pytest.raises(ValueError, match="labels"):
        Retriever(database, labels[:-1])
    with pytest.raises(ValueError, match="NaN"):
        bad = database.copy()
        bad[3, 2] = np.nan
        Retriever(bad).search(queries, 8, 5)
    with pytest.raises(ValueError, match="no labels"):
        single_shot_table(Retriever(database), queries, query_labels, [8])
    with pytest.raises(ValueError, match="non-increasing"):
        Funnel(8, (16, 32), (100, 200))
    with pytest.raises(ValueError, match="one shortlist length"):
        Funnel(8, (16, 32), (100,))


# ----------------------------------------------------------------------------- tables


def test_default_funnels_follow_the_paper():
    funnels = default_funnels([8, 16, 32, 64, 128, 256, 512, 1024, 2048], shortlist_dims=[16])
    assert funnels == [Funnel(16, (32, 64, 128, 256, 2048), (200, 100, 50, 25, 10))]
    short = default_funnels([1, 2, 4, 8])
    assert [f.rerank_dims for f in short] == [(2, 4, 8), (4, 8), (8,)]
    assert [f.shortlist_sizes for f in short] == [(200, 100, 50), (200, 100), (200,)]
    assert short[0].label == "1 | 2→4→8 | 200→100→50"


def test_evaluate_retrieval_table_is_tidy_and_consistent(data):
    database, labels, queries, query_labels = data
    report = evaluate_retrieval(
        database, labels, queries, query_labels, [4, 8, 16], model="toy", progress=False
    )
    table = report.table
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["method"]) == {"single-shot", "adaptive", "funnel", "shortlist-ablation"}
    assert table["value"].between(0, 1).all()
    assert (table["ms_per_query"] > 0).all()
    single = table[(table["method"] == "single-shot") & (table["metric"] == "map")]
    assert sorted(single["Ds"].unique()) == [4, 8, 16, 32]  # full size added
    top1 = table[(table["method"] == "single-shot") & (table["metric"] == "top1")]
    assert top1.set_index("Ds")["value"][32] > top1.set_index("Ds")["value"][4]
    adaptive = table[(table["method"] == "adaptive") & (table["metric"] == "top1")]
    assert len(adaptive) == 6  # every Ds < Dr over 4, 8, 16, 32
    assert (adaptive["mflops_per_query"] < retrieval_mflops(len(database), 32)).all()
    ablation = table[(table["method"] == "shortlist-ablation") & (table["metric"] == "top1")]
    assert list(ablation["K"]) == [100, 200, 400, 800]  # 1600, 2048 exceed N = 1500
    assert set(report.indexes["truncate_dim"]) == {4, 8, 16, 32}

    # Single-shot rows are the metrics of the brute-force neighbours.
    retriever = Retriever(database, labels)
    again = single_shot_table(retriever, queries, query_labels, [8], progress=False)
    brute = retrieval_metrics(_numpy_ranking(queries, database, 8)[:, :100], query_labels, labels)
    np.testing.assert_allclose(again["value"].to_numpy(), brute["value"].to_numpy())
    # Adaptive rows at Dr = Ds + rerank equal the Retriever's adaptive ranking.
    ar = adaptive_table(retriever, queries, query_labels, [4], [16], progress=False)
    expected = retrieval_metrics(retriever.adaptive(queries, 4, 16), query_labels, labels)
    np.testing.assert_allclose(ar["value"].to_numpy(), expected["value"].to_numpy())


def _row(method, ds, dr, value, mflops, ms, cascade=""):
    return {
        "model": "m",
        "method": method,
        "index": "flat",
        "Ds": ds,
        "Dr": dr,
        "K": None if dr is None else 200,
        "cascade": cascade,
        "metric": "map",
        "k": 10,
        "value": value,
        "mflops_per_query": mflops,
        "ms_per_query": ms,
    }


def test_as_accurate_speedup_is_computed_from_the_table():
    table = pd.DataFrame(
        [
            _row("single-shot", 16, None, 0.60, 20.0, 2.0),
            _row("single-shot", 2048, None, 0.65, 2560.0, 40.0),
            _row("adaptive", 8, 2048, 0.64, 10.4, 1.0),  # not accurate enough
            _row("adaptive", 16, 2048, 0.651, 20.4, 2.5),  # the answer
            _row("adaptive", 32, 2048, 0.652, 41.0, 4.0),  # accurate but dearer
            _row("funnel", 16, 2048, 0.66, 20.5, 3.0, "16 | … | …"),
        ]
    )
    best = as_accurate_speedup(table, "map", 10)
    assert len(best) == 1
    b = best.iloc[0]
    assert (b["method"], b["Ds"], b["reference_Ds"]) == ("adaptive", 16, 2048)
    assert b["flops_ratio"] == pytest.approx(2560 / 20.4)
    assert b["speed_ratio"] == pytest.approx(40 / 2.5)
    loose = as_accurate_speedup(table, "map", 10, tolerance=0.02).iloc[0]
    assert loose["Ds"] == 8
    assert as_accurate_speedup(table, "map", 10, tolerance=-0.1).empty
    with pytest.raises(ValueError, match="no rows"):
        as_accurate_speedup(table, "map", 50)


def test_figures_plot_the_table(data):
    database, labels, queries, query_labels = data
    table = evaluate_retrieval(
        database, labels, queries, query_labels, [4, 8, 16], progress=False
    ).table
    fig7 = plot_metric_vs_size(table, "map", 10)
    assert len(fig7.data) == 1 and list(fig7.data[0].x) == [4, 8, 16, 32]
    fig8 = plot_cost_tradeoff(table, "top1", tolerance=0.05)
    names = [t.name for t in fig8.data]
    assert names[0] == "single-shot (Pareto)" and "funnel" in names
    assert {"AR Ds=4", "AR Ds=8", "AR Ds=16"} <= set(names)
    assert len(fig8.layout.annotations) == 1
    ablation = plot_shortlist_ablation(table)
    assert [t.name for t in ablation.data] == [
        "model top-1 (Ds=16, Dr=32)",
        "model top-1 single-shot d=32",
        "model mAP@10 (Ds=16, Dr=32)",
        "model mAP@10 single-shot d=32",
    ]
    full = table[(table["method"] == "single-shot") & (table["Ds"] == 32) & (table["k"] == 1)]
    assert list(ablation.data[1].y) == [100 * full["value"].iloc[0]] * 2
    no_reference = plot_shortlist_ablation(table[table["method"] != "single-shot"])
    assert len(no_reference.data) == 2
    with pytest.raises(ValueError, match="unknown metric"):
        plot_metric_vs_size(table, "ndcg", 10)
    two = pd.concat([table, table.assign(model="other")])
    with pytest.raises(ValueError, match="pass model"):
        plot_cost_tradeoff(two)


def test_synthetic_nested_is_deterministic_and_nested(data):
    a = synthetic_nested(100, 10, dim=16, num_classes=4, seed=7)
    b = synthetic_nested(100, 10, dim=16, num_classes=4, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0].dtype == np.float32 and a[0].shape == (100, 16) and a[2].shape == (10, 16)
    database = data[0]
    variance = database.var(axis=0)
    assert variance[0] > 5 * variance[-1]  # early dimensions dominate the geometry


# ----------------------------------------------------------------------------- several models


def test_query_subset_is_stratified_sorted_and_seeded():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    rows = query_subset(labels, 50, seed=1)
    assert len(rows) == 50 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(np.bincount(labels[rows]), [20, 15, 10, 5])
    np.testing.assert_array_equal(rows, query_subset(labels, 50, seed=1))
    assert not np.array_equal(rows, query_subset(labels, 50, seed=2))
    np.testing.assert_array_equal(query_subset(labels, None), np.arange(100))
    np.testing.assert_array_equal(query_subset(labels, 500), np.arange(100))
    assert len(query_subset(np.arange(10), 3)) == 3  # one row per class: uniform instead
    with pytest.raises(ValueError, match="n_queries"):
        query_subset(labels, 0)


def _bundle(templates: torch.Tensor, n: int, seed: int, split: str) -> SimpleNamespace:
    """Images = class template + noise, so nearest neighbours tend to share the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(templates), (n,), generator=g)
    images = templates[labels] + 0.5 * torch.rand(n, 1, 28, 28, generator=g)
    return SimpleNamespace(
        dataset=TensorDataset(images, labels),
        targets=labels.numpy(),
        fingerprint=f"templates-{split}",
        split=split,
        class_names=[f"class {i}" for i in range(len(templates))],
    )


@pytest.fixture(scope="module")
def model_caches(tmp_path_factory):
    """Real caches of an (untrained) MRL and FF-8 model: train split 150, test split 40."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only spin on a busy machine
    torch.manual_seed(0)
    templates = torch.rand(4, 1, 28, 28)
    models = {
        "MRL": build_model("resnet18", 4, "mrl", [2, 4, 8, 512], in_channels=1),
        "FF-8": build_model("resnet18", 4, "ff", ff_dim=8, in_channels=1),
    }
    splits = {
        "train": _bundle(templates, 150, 1, "train"),
        "test": _bundle(templates, 40, 2, "test"),
    }
    root = tmp_path_factory.mktemp("caches")
    caches = {
        split: {
            name: embed_dataset(model.eval(), bundle, root / name / split, progress=False)
            for name, model in models.items()
        }
        for split, bundle in splits.items()
    }
    torch.set_num_threads(before)
    return caches["train"], caches["test"]


def test_evaluate_models_runs_each_kind_as_documented(model_caches):
    databases, queries = model_caches
    options = {"ks": [5, 10], "ablation_sizes": [20, 50], "progress": False}
    report = evaluate_models(
        databases, queries, n_queries=30, min_dim=4, seed=0, funnel_shortlists=[60, 30], **options
    )
    table = report.table
    assert list(table.columns) == TABLE_COLUMNS
    mrl, ff = table[table["model"] == "MRL"], table[table["model"] == "FF-8"]
    assert set(mrl["method"]) == {"single-shot", "adaptive", "funnel", "shortlist-ablation"}
    assert sorted(mrl.loc[mrl["method"] == "single-shot", "Ds"].unique()) == [4, 8, 512]
    assert set(mrl.loc[mrl["method"] == "funnel", "cascade"]) == {
        "4 | 8→512 | 60→30",
        "8 | 512 | 60",
    }
    assert set(ff["method"]) == {"single-shot"} and set(ff["Ds"]) == {8}
    assert set(report.indexes["model"]) == {"MRL", "FF-8"}
    assert list(report.indexes.columns[:2]) == ["model", "structure"]

    # FF-k is searched with its first k features, on the same query subset as every model.
    same = {"ks": options["ks"], "progress": False}
    rows = query_subset(queries["FF-8"].labels, 30, seed=0)
    retriever = Retriever(databases["FF-8"].features(8), databases["FF-8"].labels)
    q = queries["FF-8"].features(8)[rows]
    expected = single_shot_table(retriever, q, queries["FF-8"].labels[rows], [8], **same)
    np.testing.assert_allclose(ff["value"].to_numpy(), expected["value"].to_numpy())
    # Same for the MRL model's rows, which evaluate_retrieval produced.
    retriever = Retriever(databases["MRL"].features(), databases["MRL"].labels)
    q = queries["MRL"].features()[rows]
    expected = single_shot_table(retriever, q, queries["MRL"].labels[rows], [4], **same)
    got = mrl[(mrl["method"] == "single-shot") & (mrl["Ds"] == 4)]
    np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy())

    few = evaluate_models(databases, queries, funnel_dims=[8], **options).table
    assert set(few.loc[few["method"] == "funnel", "cascade"]) == {"8 | 512 | 150"}  # N = 150

    only_single = evaluate_models(databases, queries, full_models=[], min_dim=2, **options)
    assert set(only_single.table["method"]) == {"single-shot"}
    assert sorted(only_single.table.query("model == 'MRL'")["Ds"].unique()) == [2, 4, 8, 512]


def test_evaluate_models_rejects_bad_input(model_caches):
    databases, queries = model_caches
    with pytest.raises(ValueError, match="not nested"):
        evaluate_models(databases, queries, full_models=["FF-8"], progress=False)
    with pytest.raises(ValueError, match="not among"):
        evaluate_models(databases, queries, full_models=["MRL-E"], progress=False)
    with pytest.raises(ValueError, match="but not both"):
        evaluate_models({"MRL": databases["MRL"]}, queries, progress=False)
    with pytest.raises(ValueError, match="min_dim"):
        evaluate_models(databases, queries, min_dim=1000, progress=False)
