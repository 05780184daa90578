"""Retrieval tables: the paper's funnels, the plan, and one model's tidy table."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import numpy_ranking

from mrl_analysis.retrieval.index import IndexSpec, Retriever
from mrl_analysis.retrieval.metrics import retrieval_metrics, retrieval_mflops
from mrl_analysis.retrieval.plan import Funnel, RetrievalPlan, default_funnels
from mrl_analysis.retrieval.synthetic import synthetic_nested
from mrl_analysis.retrieval.tables import (
    TABLE_COLUMNS,
    adaptive_table,
    evaluate_retrieval,
    funnel_table,
    select,
    single_shot_table,
)


@pytest.fixture(scope="module")
def data():
    return synthetic_nested(1500, 60, dim=32, num_classes=12, noise=1.2, seed=3)


def test_default_funnels_follow_the_paper():
    funnels = default_funnels([8, 16, 32, 64, 128, 256, 512, 1024, 2048], shortlist_dims=[16])
    assert funnels == [Funnel(16, (32, 64, 128, 256, 2048), (200, 100, 50, 25, 10))]
    short = default_funnels([1, 2, 4, 8])
    assert [f.rerank_dims for f in short] == [(2, 4, 8), (4, 8), (8,)]
    assert [f.shortlist_sizes for f in short] == [(200, 100, 50), (200, 100), (200,)]
    assert short[0].label == "1 | 2→4→8 | 200→100→50"


def test_plan_is_one_frozen_value_with_checked_fields():
    plan = RetrievalPlan(ks=[25, 10, 10], funnel_shortlists=[60, 30], funnel_dims=[8])
    assert plan.ks == (10, 25) and plan.funnel_shortlists == (60, 30)
    assert plan == RetrievalPlan(ks=(10, 25), funnel_shortlists=(60, 30), funnel_dims=(8,))
    assert hash(plan) == hash(
        RetrievalPlan(ks=(10, 25), funnel_shortlists=(60, 30), funnel_dims=(8,))
    )
    # Funnel lengths are capped at the database size; the ablation size is nearest 16.
    assert plan.funnels([4, 8, 512], 40) == [Funnel(8, (512,), (40,))]
    assert RetrievalPlan().ablation_size([2, 8, 24, 512]) == 8
    assert RetrievalPlan(ablation_dim=24).ablation_size([2, 8, 24, 512]) == 24
    with pytest.raises(ValueError, match="shortlist_size must lie in 1.."):
        RetrievalPlan(shortlist_size=0)
    with pytest.raises(TypeError, match="ablation_sizes entry must be an integer"):
        RetrievalPlan(ablation_sizes=[100, 2.5])
    with pytest.raises(ValueError, match="ks"):
        RetrievalPlan(ks=[])


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
    assert set(table["index"]) == {"flat"} and set(table["model"]) == {"toy"}
    single = table[(table["method"] == "single-shot") & (table["metric"] == "map")]
    assert sorted(single["Ds"].unique()) == [4, 8, 16, 32]  # full size added
    top1 = table[(table["method"] == "single-shot") & (table["metric"] == "top1")]
    assert top1.set_index("Ds")["value"][32] > top1.set_index("Ds")["value"][4]
    adaptive = table[(table["method"] == "adaptive") & (table["metric"] == "top1")]
    assert len(adaptive) == 6  # every Ds < Dr over 4, 8, 16, 32
    assert (adaptive["mflops_per_query"] < retrieval_mflops(len(database), 32)).all()
    ablation = table[(table["method"] == "shortlist-ablation") & (table["metric"] == "top1")]
    assert list(ablation["K"]) == [100, 200, 400, 800]  # 1600, 2048 exceed N = 1500
    assert list(ablation["Ds"].unique()) == [16]  # the size nearest 16
    assert set(report.indexes["truncate_dim"]) == {4, 8, 16, 32}

    # Single-shot rows are the metrics of the brute-force neighbours.
    retriever = Retriever(database, labels)
    again = single_shot_table(retriever, queries, query_labels, [8], progress=False)
    brute = retrieval_metrics(numpy_ranking(queries, database, 8)[:, :100], query_labels, labels)
    np.testing.assert_allclose(again["value"].to_numpy(), brute["value"].to_numpy())
    # Adaptive rows at Dr = Ds + rerank equal the Retriever's adaptive ranking.
    ar = adaptive_table(retriever, queries, query_labels, [4], [16], progress=False)
    expected = retrieval_metrics(retriever.adaptive(queries, 4, 16), query_labels, labels)
    np.testing.assert_allclose(ar["value"].to_numpy(), expected["value"].to_numpy())
    # The same single-shot rows as evaluate_retrieval's.
    at8 = table[(table["method"] == "single-shot") & (table["Ds"] == 8)]
    np.testing.assert_allclose(at8["value"].to_numpy(), again["value"].to_numpy())


def test_evaluate_retrieval_follows_the_plan_and_the_index_spec(data):
    database, labels, queries, query_labels = data
    plan = RetrievalPlan(
        ks=[5],
        shortlist_size=50,
        funnel_shortlists=[40, 20],
        funnel_dims=[8],
        ablation_dim=4,
        ablation_sizes=[30, 60],
    )
    spec = IndexSpec("hnsw", hnsw_m=16, ef_search=64)
    report = evaluate_retrieval(
        database, labels, queries, query_labels, [4, 8, 16], index=spec, plan=plan, progress=False
    )
    table = report.table
    assert set(table["index"]) == {"hnsw"} and set(table["k"].unique()) == {1, 5}
    assert set(table.loc[table["method"] == "adaptive", "K"]) == {50}
    assert set(table.loc[table["method"] == "funnel", "cascade"]) == {"8 | 16→32 | 40→20"}
    ablation = table[table["method"] == "shortlist-ablation"]
    assert set(ablation["Ds"]) == {4} and sorted(ablation["K"].unique()) == [30, 60]
    assert "hnsw" in set(report.indexes["structure"])
    with pytest.raises(ValueError, match="nesting"):
        evaluate_retrieval(database, labels, queries, query_labels, [4, 64], progress=False)


def test_funnel_rows_name_the_cascade_and_its_cost(data):
    database, labels, queries, query_labels = data
    funnel = Funnel(4, (8, 32), (80, 40))
    table = funnel_table(
        Retriever(database, labels), queries, query_labels, [funnel], ks=[10], progress=False
    )
    assert set(table["cascade"]) == {"4 | 8→32 | 80→40"}
    assert set(table["Dr"]) == {32} and set(table["K"]) == {80}
    assert table["mflops_per_query"].iloc[0] == pytest.approx((1500 * 4 + 8 * 80 + 32 * 40) / 1e6)


def test_table_builders_reject_bad_input(data):
    database, labels, queries, query_labels = data
    with pytest.raises(ValueError, match="no labels"):
        single_shot_table(Retriever(database), queries, query_labels, [8])
    with pytest.raises(ValueError, match="query_labels"):
        single_shot_table(Retriever(database, labels), queries, query_labels[:-1], [8])
    table = single_shot_table(Retriever(database, labels), queries, query_labels, [8], ks=[10])
    with pytest.raises(ValueError, match="unknown metric 'ndcg'"):
        select(table, "ndcg", 10)
    with pytest.raises(ValueError, match="no rows for map@50"):
        select(table, "map", 50)
    with pytest.raises(ValueError, match="lacks columns"):
        select(table.drop(columns="cascade"), "map", 10)
