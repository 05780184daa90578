"""Summaries of a retrieval table on hand-made rows: speed-ups, views and the headlines."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mrl_analysis.retrieval.summary import (
    HEADLINE_COLUMNS,
    ablation_summary,
    adaptive_grid,
    as_accurate_speedup,
    frontier_line,
    frontier_points,
    frontier_summary,
    funnel_summary,
    headline_text,
    metrics_by_size,
    pareto_front,
    ratio_text,
    retrieval_headlines,
    single_shot_by_size,
    single_shot_cost,
    speedup_table,
)


def _row(method, ds, dr, value, mflops, ms, cascade="", *, model="m", metric="map", k=10, ci=0.01):
    return {
        "model": model,
        "method": method,
        "index": "flat",
        "config": "flat",
        "Ds": ds,
        "Dr": dr,
        "K": None if dr is None else 200,
        "cascade": cascade,
        "metric": metric,
        "k": k,
        "value": value,
        "ci_low": value - ci,
        "ci_high": value + ci,
        "mflops_per_query": mflops,
        "ms_per_query": ms,
        "bytes_per_vector": 4.0 * ds + (0 if dr is None else 4.0 * dr),
    }


def _table(*, top1: bool = True) -> pd.DataFrame:
    rows = [
        _row("single-shot", 16, None, 0.60, 20.0, 2.0),
        _row("single-shot", 2048, None, 0.65, 2560.0, 40.0),
        _row("adaptive", 8, 2048, 0.64, 10.4, 1.0),  # not accurate enough
        _row("adaptive", 16, 2048, 0.651, 20.4, 2.5),  # the answer
        _row("adaptive", 32, 2048, 0.652, 41.0, 4.0),  # accurate but dearer
        _row("funnel", 16, 2048, 0.66, 20.5, 3.0, "16 | 2048 | 200"),
    ]
    if top1:
        rows += [
            _row("single-shot", 16, None, 0.70, 20.0, 2.0, metric="top1", k=1),
            _row("single-shot", 2048, None, 0.80, 2560.0, 40.0, metric="top1", k=1),
            _row("adaptive", 16, 2048, 0.79, 20.4, 2.5, metric="top1", k=1),
            _row("funnel", 16, 2048, 0.805, 20.5, 3.0, "16 | 2048 | 200", metric="top1", k=1),
        ]
    # The dtypes of a real table (stack_tables): sizes are nullable integers.
    return pd.DataFrame(rows).astype({"Ds": "Int64", "Dr": "Int64", "K": "Int64", "k": "Int64"})


def test_as_accurate_speedup_is_computed_from_the_table():
    table = _table(top1=False)
    best = as_accurate_speedup(table, "map", 10)
    assert len(best) == 1
    b = best.iloc[0]
    assert (b["method"], b["Ds"], b["reference_Ds"]) == ("adaptive", 16, 2048)
    assert b["flops_ratio"] == pytest.approx(2560 / 20.4)
    assert b["speed_ratio"] == pytest.approx(40 / 2.5)
    assert (b["reference_value"], b["value"]) == (0.65, 0.651)
    loose = as_accurate_speedup(table, "map", 10, tolerance=0.02).iloc[0]
    assert loose["Ds"] == 8  # 0.64 >= 0.65 - 0.02: cheapest wins
    assert as_accurate_speedup(table, "map", 10, tolerance=0.01).iloc[0]["Ds"] == 8  # boundary
    against_16 = as_accurate_speedup(table, "map", 10, reference_dim=16).iloc[0]
    assert (against_16["Ds"], against_16["reference_Ds"]) == (8, 16)
    only_funnels = as_accurate_speedup(table, "map", 10, methods=["funnel"]).iloc[0]
    assert only_funnels["cascade"] == "16 | 2048 | 200"
    nothing = table[~((table["method"] != "single-shot") & (table["value"] >= 0.65))]
    assert as_accurate_speedup(nothing, "map", 10).empty
    with pytest.raises(ValueError, match="fraction"):
        as_accurate_speedup(table, "map", 10, tolerance=-0.1)
    with pytest.raises(ValueError, match="fraction"):
        as_accurate_speedup(table, "map", 10, tolerance=5)  # points, not a fraction
    with pytest.raises(ValueError, match="no rows"):
        as_accurate_speedup(table, "map", 50)
    with pytest.raises(ValueError, match="Ds=64"):
        as_accurate_speedup(table, "map", 10, reference_dim=64)


def test_ties_in_mflops_go_to_the_faster_configuration():
    table = pd.DataFrame(
        [
            _row("single-shot", 64, None, 0.5, 64.0, 5.0),
            _row("adaptive", 8, 64, 0.5, 10.0, 3.0),
            _row("funnel", 8, 64, 0.5, 10.0, 2.0, "8 | 64 | 200"),
        ]
    )
    assert as_accurate_speedup(table, "map", 10).iloc[0]["method"] == "funnel"


def test_speedup_table_stacks_measures_once_each():
    table = _table()
    speedups = speedup_table(table, [("map", 10), ("top1", 1), ("top1", 5)], tolerance=0.005)
    assert list(speedups["metric"]) == ["map", "top1"]
    # top-1: 0.79 >= 0.80 - 0.005 fails, the funnel's 0.805 qualifies.
    assert list(speedups["method"]) == ["adaptive", "funnel"]
    assert speedup_table(table.iloc[:2], [("map", 10)]).empty


def test_views_pivot_the_measure():
    table = pd.concat(
        [_table(), pd.DataFrame([_row("single-shot", 16, None, 0.5, 20.0, 2.0, model="FF-16")])]
    )
    by_size = single_shot_by_size(table, "map", 10, families={"FF-16": "FF"})
    assert by_size.columns.name == "mAP@10" and list(by_size.index) == [16, 2048]
    assert by_size.loc[16, "FF"] == 0.5 and by_size.loc[2048, "m"] == 0.65
    assert math.isnan(by_size.loc[2048, "FF"])
    detail = metrics_by_size(table, ["m"])
    assert detail.loc[("m", 2048), "top-1"] == 0.80 and detail.loc[("m", 16), "mAP@10"] == 0.60
    grid = adaptive_grid(table, "m", "map", 10)
    assert grid.loc[16, 2048] == 0.651 and list(grid.columns) == [2048, "single-shot"]
    assert math.isnan(grid.loc[32, "single-shot"])  # no single-shot row at 32
    assert grid.loc[16, "single-shot"] == 0.60
    funnels = funnel_summary(table, "map", 10)
    assert funnels.loc[("m", "16 | 2048 | 200", 20.5, 3.0), "top-1"] == 0.805
    cost = single_shot_cost(table)
    assert cost.loc[2048, ("mflops_per_query", "m")] == 2560.0
    ablation = pd.DataFrame(
        [
            {**_row("shortlist-ablation", 16, 2048, v, 1.0, 1.0), "K": K}
            for K, v in [(100, 0.6), (200, 0.62)]
        ]
    )
    assert list(ablation_summary(ablation, "map")[("map", 10)]) == [0.6, 0.62]


def test_headlines_state_the_numbers_of_the_tables():
    table = _table()
    models = pd.DataFrame(
        [
            {"model": "m", "database_items": 60000, "queries": 2000, "adaptive": True},
            {"model": "FF-8", "database_items": 60000, "queries": 2000, "adaptive": False},
        ]
    )
    heads = retrieval_headlines(table, models, metric="map", k=10, tolerance=0.005)
    assert list(heads.columns) == HEADLINE_COLUMNS
    assert list(heads["headline"]) == ["queries", "as_accurate", "as_accurate", "single_shot_cost"]
    queries = heads.iloc[0]
    assert queries["value"] == 2000
    assert queries["text"] == "2,000 queries against 60,000 database items, `flat` index."

    speed = heads[heads["headline"] == "as_accurate"].set_index("measure")
    assert speed.loc["mAP@10", "value"] == pytest.approx(2560 / 20.4)
    assert speed.loc["mAP@10", "text"] == (
        "**m**, mAP@10: adaptive Ds=16, Dr=2048, K=200 reaches 65.10% [64.10%, 66.10%] "
        "against 65.00% [64.00%, 66.00%] for single-shot at d=2048 (tolerance 0.5 points): "
        "125.5× fewer MFLOPs (20.4 vs 2.56e+03) and 16.0× faster measured (2.500 vs 40.000 "
        "ms/query)."
    )
    assert speed.loc["top-1", "value"] == pytest.approx(2560 / 20.5)
    assert speed.loc["top-1", "text"].startswith(
        "**m**, top-1: funnel 16 | 2048 | 200 reaches 80.50%"
    )

    cost = heads[heads["headline"] == "single_shot_cost"].iloc[0]
    assert (cost["model"], cost["value"]) == ("m", 128.0)
    assert cost["text"] == (
        "m: single-shot at d=2048 needs 128× the MFLOPs of d=16 and 20.0× its measured time."
    )
    assert headline_text(heads, "queries") == queries["text"]
    assert headline_text(heads, "as_accurate").count("\n* ") == 1
    with pytest.raises(ValueError, match="no headline 'speed'"):
        headline_text(heads, "speed")


def test_headlines_say_when_nothing_is_as_accurate():
    table = _table()
    table = table[(table["method"] == "single-shot") | (table["value"] < 0.6)]
    models = pd.DataFrame([{"model": "m", "database_items": 10, "queries": 5, "adaptive": False}])
    heads = retrieval_headlines(table, models)
    row = heads[heads["headline"] == "as_accurate"].iloc[0]
    assert math.isnan(row["value"])
    assert row["text"] == "No adaptive or funnel configuration is as accurate."
    assert "single_shot_cost" not in set(heads["headline"])  # no adaptive model
    with pytest.raises(ValueError, match="fraction"):
        retrieval_headlines(table, models, tolerance=0.5 * 100)


def test_ratios_read_true_in_both_directions():
    assert ratio_text(16.0, "faster", "slower") == "16.0× faster"
    assert ratio_text(0.8, "faster", "slower") == "1.2× slower"
    assert ratio_text(0.5, "fewer", "more") == "2.0× more"
    table = _table()
    slow = table.assign(
        ms_per_query=table["ms_per_query"].where(table["method"] == "single-shot", 80.0)
    )
    models = pd.DataFrame([{"model": "m", "database_items": 10, "queries": 5, "adaptive": True}])
    text = headline_text(retrieval_headlines(slow, models), "as_accurate")
    assert "2.0× slower measured (80.000 vs 40.000 ms/query)" in text and "faster" not in text


def test_pareto_front_keeps_the_points_nothing_beats():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    quality = [0.5, 0.7, 0.6, 0.7, 0.9, 0.1]
    assert list(pareto_front(cost, quality)) == [True, True, False, False, True, True]
    assert list(pareto_front([1.0, 1.0], [0.5, 0.5])) == [True, False]  # equal: the first
    with pytest.raises(ValueError, match="one length"):
        pareto_front([1.0], [0.5, 0.6])


def _frontier_rows(config, method, ms, nbytes, top1, map10, recall, *, ds=512, dr=None, k=None):
    base = {
        "model": "m",
        "method": method,
        "index": "faiss" if method == "peer" else "ivf",
        "config": config,
        "Ds": ds,
        "Dr": dr,
        "K": k,
        "cascade": "",
        "mflops_per_query": float("nan"),
        "ms_per_query": ms,
        "bytes_per_vector": nbytes,
    }
    values = (("top1", 1, top1), ("map", 10, map10), ("nn_recall", 10, recall))
    return [
        {**base, "metric": m, "k": kk, "value": v, "ci_low": v - 0.01, "ci_high": v + 0.01}
        for m, kk, v in values
    ]


def _frontier_table() -> pd.DataFrame:
    rows = (
        _frontier_rows("flat", "exact", 10.0, 2048, 0.80, 0.60, 1.0)
        + _frontier_rows(
            "IVF64 Dc=16 nprobe=4", "pipeline", 0.1, 2312, 0.70, 0.50, 0.70, ds=64, dr=512, k=200
        )
        + _frontier_rows(
            "IVF64 Dc=16 nprobe=16", "pipeline", 0.2, 2312, 0.797, 0.595, 0.95, ds=64, dr=512, k=200
        )
        + _frontier_rows(
            "IVF64 Dc=16 nprobe=64", "pipeline", 0.4, 2312, 0.80, 0.60, 0.99, ds=64, dr=512, k=200
        )
        + _frontier_rows("HNSW32,Flat efSearch=16", "peer", 0.15, 2300, 0.79, 0.59, 0.90)
        + _frontier_rows("HNSW32,Flat efSearch=64", "peer", 0.5, 2300, 0.80, 0.60, 0.97)
        + _frontier_rows("HNSW32,Flat efSearch=256", "peer", 1.5, 2300, 0.80, 0.60, 0.999)
    )
    return pd.DataFrame(rows).astype({"Ds": "Int64", "Dr": "Int64", "K": "Int64", "k": "Int64"})


def test_frontier_compares_the_best_adaptive_with_exact_and_the_peer_at_its_recall():
    table = _frontier_table()
    points = frontier_points(table)
    assert len(points) == 7 and set(points["family"]) == {
        "exact single-shot",
        "MRL, ivf shortlist",
        "faiss HNSW32,Flat",
    }
    ivf4 = points[points["config"] == "IVF64 Dc=16 nprobe=4"].iloc[0]
    assert (ivf4["top1"], ivf4["map"], ivf4["nn_recall"]) == (0.70, 0.50, 0.70)
    assert ivf4["nn_recall_low"] == pytest.approx(0.69) and ivf4["pareto_ms"]
    assert not points.loc[points["config"] == "HNSW32,Flat efSearch=64", "pareto_ms"].iloc[0]

    row = frontier_summary(table).iloc[0]
    # nprobe=4 loses 10 points of top-1; nprobe=16 is within 0.5 pt top-1 and 1 pt mAP.
    assert row["best"].startswith("ivf Ds=64→Dr=512 K=200 (IVF64 Dc=16 nprobe=16)")
    assert row["speedup_vs_exact"] == pytest.approx(10.0 / 0.2)
    assert row["top1_delta"] == pytest.approx(-0.003) and row["recall"] == 0.95
    # The fastest peer with recall >= 0.95 is efSearch=64 (efSearch=16 reaches only 0.90).
    assert row["peer"] == "faiss HNSW32,Flat efSearch=64"
    assert row["speedup_vs_peer"] == pytest.approx(0.5 / 0.2)
    assert frontier_line(row) == (
        "frontier: best adaptive 50.0× vs exact (top-1 Δ -0.30 pt), 2.5× vs best faiss peer "
        "at recall@10 0.950"
    )
    strict = frontier_summary(table, top1_tolerance=0.0).iloc[0]
    assert strict["best"].startswith("ivf Ds=64→Dr=512 K=200 (IVF64 Dc=16 nprobe=64)")
    assert strict["peer"] == "faiss HNSW32,Flat efSearch=256"
    no_peer = table[~table["config"].isin(["HNSW32,Flat efSearch=256"])]
    line = frontier_line(frontier_summary(no_peer, top1_tolerance=0.0).iloc[0])
    assert line.endswith("no faiss peer reaches its recall@10 0.990")
    none = frontier_summary(table[table["method"] != "pipeline"]).iloc[0]
    assert frontier_line(none).startswith("frontier: no adaptive pipeline")
    models = pd.DataFrame([{"model": "m", "database_items": 10, "queries": 5, "adaptive": True}])
    text = headline_text(retrieval_headlines(table, models), "frontier")
    assert "50.0× faster" in text and "the MRL pipeline is 2.5× faster" in text
