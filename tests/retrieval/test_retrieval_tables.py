"""Retrieval tables: the paper's funnels, the plan, and one model's tidy table."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import numpy_ranking

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.retrieval.index import IndexSpec, Retriever
from mrl_analysis.retrieval.metrics import retrieval_metrics, retrieval_mflops
from mrl_analysis.retrieval.plan import (
    Funnel,
    PeerSpec,
    Pipeline,
    RetrievalPlan,
    default_funnels,
    default_peers,
    default_pipelines,
)
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
    with pytest.raises(TypeError, match="frontier must be True or False"):
        RetrievalPlan(frontier="yes")
    with pytest.raises(TypeError, match="funnel_dims entry must be an integer"):
        RetrievalPlan(funnel_dims=[8.0])


def test_default_frontier_sweeps_adanns_quantized_prefixes_and_faiss_peers():
    nesting = [8, 16, 32, 64, 128, 256, 512]
    pipelines = default_pipelines(nesting, 1_000_000)
    kinds = {p.index.label for p in pipelines}
    assert kinds == {"ivf", "ivf-int8", "hnsw", "flat-int8", "flat-binary"}
    ivf = [p for p in pipelines if p.index.kind == "ivf"]
    assert {(p.index.coarse_dim, p.shortlist_dim) for p in ivf} == {
        (16, 32),
        (16, 64),
        (32, 64),
        (64, 64),
    }
    assert all(p.index.coarse_dim <= p.shortlist_dim for p in ivf)
    assert {p.shortlist_dim for p in pipelines if p.index.codec == "binary"} == {64, 128, 256, 512}
    assert {p.rerank_dim for p in pipelines} == {None, 128, 256}
    assert len(pipelines) == len(set(pipelines))
    # A short ladder maps several targets onto one size: each run is kept once.
    assert len(default_pipelines([4, 8], 1000)) == len(set(default_pipelines([4, 8], 1000)))
    assert default_pipelines([512], 1000) == []
    peers = default_peers(512, 1_000_000)
    assert {p.factory for p in peers} == {"HNSW32,Flat", "IVF4096,PQ64np,RFlat", "HNSW32,SQ8,RFlat"}
    assert default_peers(32, 1500)[6].factory == "IVF38,PQ4x4np,RFlat"  # few items: 4 bits
    plan = RetrievalPlan(frontier=True, shortlist_size=300)
    runs, faiss_peers = plan.frontier_runs(nesting, 250)
    assert {p.shortlist_size for p in runs} == {250, 125, 62} and faiss_peers
    assert RetrievalPlan().frontier_runs(nesting, 250) == ([], [])


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
    exact = numpy_ranking(queries, database, 32)[:, :100]
    ranking = numpy_ranking(queries, database, 8)[:, :100]
    brute = retrieval_metrics(ranking, query_labels, labels, exact=exact)
    for col in ("value", "ci_low", "ci_high"):  # intervals: same queries, same resamples
        np.testing.assert_allclose(again[col].to_numpy(), brute[col].to_numpy())
    assert (again["ci_low"] <= again["value"]).all() and (again["value"] <= again["ci_high"]).all()
    # Adaptive rows at Dr = Ds + rerank equal the Retriever's adaptive ranking.
    ar = adaptive_table(retriever, queries, query_labels, [4], [16], progress=False)
    adaptive = retriever.adaptive(queries, 4, 16)
    expected = retrieval_metrics(adaptive, query_labels, labels, exact=exact)
    np.testing.assert_allclose(ar["value"].to_numpy(), expected["value"].to_numpy())
    # The ANN view: the full-size single-shot finds every exact neighbour.
    recall = table[(table["metric"] == "nn_recall") & (table["method"] == "single-shot")]
    assert (recall.set_index("Ds").loc[32, "value"] == 1.0).all()
    assert set(recall["k"]) == {10, 25, 50, 100}
    # Bytes per vector: 4 per dim for exact search, plus the rerank copy for two stages.
    first = table.drop_duplicates(["method", "Ds", "Dr", "K", "cascade"]).set_index("method")
    assert first.loc["single-shot"].set_index("Ds").loc[8, "bytes_per_vector"] == 32
    row = table[(table["method"] == "adaptive") & (table["Ds"] == 4) & (table["Dr"] == 16)]
    assert set(row["bytes_per_vector"]) == {4 * 4 + 4 * 16}
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
    with pytest.raises(TypeError, match="nesting entry must be an integer"):
        evaluate_retrieval(database, labels, queries, query_labels, [4, 8.0], progress=False)
    bad = queries.copy()
    bad[2, 20] = np.nan
    with pytest.raises(NonFiniteError, match="queries holds 1 non-finite"):
        evaluate_retrieval(database, labels, bad, query_labels, [4], progress=False)


def test_frontier_runs_exact_pipelines_and_peers_with_the_exact_truth(data):
    database, labels, queries, query_labels = data
    ivf = IndexSpec("ivf", nlist=16, nprobe=16, coarse_dim=4)
    plan = RetrievalPlan(
        ks=[10],
        frontier=True,
        pipelines=[Pipeline(8, None, 2000, ivf), Pipeline(8, 16, 100, IndexSpec(codec="int8"))],
        peers=[PeerSpec("HNSW16,Flat", "efSearch=8"), PeerSpec("HNSW16,Flat", "efSearch=64")],
        n_boot=200,
    )
    report = evaluate_retrieval(
        database, labels, queries, query_labels, [8, 16], plan=plan, progress=False
    )
    table = report.table
    front = table[table["method"].isin(["exact", "pipeline", "peer"])]
    recall = front[front["metric"] == "nn_recall"].set_index("config")
    assert recall.loc["flat", "value"] == 1.0  # the exact run is the truth
    # K is capped at N = 1500 and every list is probed: the IVF pipeline is exact adaptive.
    pipeline = front[front["method"] == "pipeline"]
    assert set(pipeline["K"]) == {1500, 100}
    assert recall.loc["IVF16 Dc=4 nprobe=16", "value"] == 1.0
    assert (
        recall.loc["HNSW16,Flat efSearch=8", "value"]
        <= recall.loc["HNSW16,Flat efSearch=64", "value"]
    )
    peers = front[front["method"] == "peer"]
    assert set(peers["index"]) == {"faiss"} and peers["mflops_per_query"].isna().all()
    assert set(report.indexes["structure"]) >= {"flat", "ivf", "flat-int8", "faiss"}
    int8 = front[front["config"] == "flat, int8"]
    assert set(int8["bytes_per_vector"]) == {8 + 4 * 16}  # int8 codes at 8 + float32 at 16
    assert (front["ms_per_query"] > 0).all() and front["ci_low"].notna().all()
    with pytest.raises(TypeError, match="pipelines must hold Pipeline"):
        RetrievalPlan(pipelines=[ivf])


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
