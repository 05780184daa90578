"""Retrieval figures draw the table's fractions on percent axes and the shared size axis."""

from __future__ import annotations

import pandas as pd
import pytest

from mrl_analysis.figures.style import TEMPLATE
from mrl_analysis.retrieval.plan import IndexSpec, PeerSpec, Pipeline, RetrievalPlan
from mrl_analysis.retrieval.plots import (
    cost_tradeoff_figure,
    frontier_figure,
    metric_vs_size_figure,
    shortlist_ablation_figure,
)
from mrl_analysis.retrieval.summary import frontier_points, pareto_front
from mrl_analysis.retrieval.synthetic import synthetic_nested
from mrl_analysis.retrieval.tables import evaluate_retrieval


@pytest.fixture(scope="module")
def table():
    database, labels, queries, query_labels = synthetic_nested(
        1500, 60, dim=32, num_classes=12, noise=1.2, seed=3
    )
    return evaluate_retrieval(
        database, labels, queries, query_labels, [4, 8, 16], progress=False
    ).table


def test_metric_vs_size_figure(table):
    fig7 = metric_vs_size_figure(table, "map", 10)
    assert len(fig7.data) == 1 and list(fig7.data[0].x) == [4, 8, 16, 32]
    single = table[(table["method"] == "single-shot") & (table["metric"] == "map")]
    assert list(fig7.data[0].y) == list(single[single["k"] == 10]["value"])  # fractions
    assert fig7.layout.yaxis.tickformat.endswith("%") and fig7.layout.xaxis.type == "log"
    assert list(fig7.layout.xaxis.tickvals) == [4, 8, 16, 32]
    single10 = single[single["k"] == 10]
    assert list(fig7.data[0].error_y.array) == list(single10["ci_high"] - single10["value"])
    assert fig7.layout.template.layout.font.size == 13  # the workbench template
    two = pd.concat([table, table.assign(model="FF-8")])
    merged = metric_vs_size_figure(two, families={"FF-8": "model"}, dataset="toy")
    assert len(merged.data) == 1 and merged.layout.title.text.startswith("toy · Single-shot")
    with pytest.raises(ValueError, match="unknown metric"):
        metric_vs_size_figure(table, "ndcg", 10)


def test_cost_tradeoff_figure(table):
    fig8 = cost_tradeoff_figure(table, "top1", tolerance=0.05)
    names = [t.name for t in fig8.data]
    assert names[0] == "single-shot (Pareto)" and "funnel" in names
    assert {"AR Ds=4", "AR Ds=8", "AR Ds=16"} <= set(names)
    assert len(fig8.layout.annotations) == 1
    assert "within 5 points of d=32" in fig8.layout.annotations[0].text
    # The measured ratio is stated as it is: a slower configuration is not "faster".
    slow = table.assign(
        ms_per_query=table["ms_per_query"].where(table["method"] == "single-shot", 1e3)
    )
    text = cost_tradeoff_figure(slow, "top1", tolerance=0.05).layout.annotations[0].text
    assert "slower measured" in text and "faster" not in text
    assert max(fig8.data[0].y) <= 1 and fig8.layout.yaxis.tickformat.endswith("%")
    two = pd.concat([table, table.assign(model="other")])
    with pytest.raises(ValueError, match="pass model"):
        cost_tradeoff_figure(two)
    assert cost_tradeoff_figure(two, model="other").layout.title.text.startswith(
        "other: mAP@10 vs MFLOPs"
    )
    with pytest.raises(ValueError, match="fraction"):
        cost_tradeoff_figure(table, tolerance=0.5 * 100)


def test_shortlist_ablation_figure(table):
    ablation = shortlist_ablation_figure(table)
    assert [t.name for t in ablation.data] == [
        "model top-1 (Ds=16, Dr=32)",
        "model top-1 single-shot d=32",
        "model mAP@10 (Ds=16, Dr=32)",
        "model mAP@10 single-shot d=32",
    ]
    full = table[(table["method"] == "single-shot") & (table["Ds"] == 32) & (table["k"] == 1)]
    assert list(ablation.data[1].y) == [full["value"].iloc[0]] * 2
    assert list(ablation.layout.xaxis.tickvals) == [100, 200, 400, 800]
    assert ablation.layout.yaxis.title.text == "top-1 / mAP@10"
    # 1600 and 2048 (0.1 decade apart) both get a level label once the legend is below the
    # plot; a length closer still (1900) is left unlabelled rather than overlapped.
    extra = table[table["method"] == "shortlist-ablation"]
    wide = pd.concat([table, *[extra.assign(K=k) for k in (1600, 1900, 2048)]])
    fig = shortlist_ablation_figure(wide)
    assert list(fig.layout.xaxis.tickvals) == [100, 200, 400, 800, 1600, 2048]
    assert fig.layout.legend.orientation == "h" and fig.layout.xaxis.tickangle == 0
    colors = [t.line.color for t in ablation.data]
    assert colors[0] == colors[1] != colors[2] == colors[3]  # a curve and its reference
    assert ablation.layout.template.layout.colorway[0] == colors[0]
    no_reference = shortlist_ablation_figure(table[table["method"] != "single-shot"])
    assert len(no_reference.data) == 2
    assert TEMPLATE == "mrl"


def test_frontier_figure_marks_pareto_points_on_both_panels():
    database, labels, queries, query_labels = synthetic_nested(
        1500, 60, dim=32, num_classes=12, noise=1.2, seed=3
    )
    plan = RetrievalPlan(
        ks=[10],
        frontier=True,
        pipelines=[Pipeline(8, None, 100, IndexSpec("ivf", nprobe=p)) for p in (1, 4)],
        peers=[PeerSpec("HNSW16,Flat", "efSearch=16")],
    )
    table = evaluate_retrieval(
        database, labels, queries, query_labels, [8, 16], plan=plan, progress=False
    ).table
    fig = frontier_figure(table, quality="nn_recall", dataset="toy")
    names = {t.name for t in fig.data}
    assert {"exact single-shot", "MRL, ivf shortlist", "faiss HNSW16,Flat", "Pareto front"} <= names
    pareto = [t for t in fig.data if t.name == "Pareto front"]
    assert len(pareto) == 2 and {t.xaxis for t in pareto} == {"x", "x2"}
    points = frontier_points(table)
    expected = points[pareto_front(points["ms_per_query"], points["nn_recall"])]
    assert sorted(pareto[0].x) == sorted(expected["ms_per_query"])
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.title.text.startswith("bytes")
    assert fig.layout.yaxis.tickformat.endswith("%") and fig.layout.title.text.startswith("toy · ")
    star = next(t for t in fig.data if t.name == "exact single-shot")
    assert star.marker.symbol == "star" and list(star.y) == [1.0]
    assert star.error_y.visible is not False  # intervals drawn
    assert fig.layout.legend.orientation == "h"
    top1 = frontier_figure(table, quality="top1")
    assert top1.layout.yaxis.title.text == "top-1"
    with pytest.raises(ValueError, match="unknown quality"):
        frontier_figure(table, quality="ndcg")
    # The MFLOPs view stays on the exact-shortlist runs of the same table.
    assert cost_tradeoff_figure(table, "map", 10).layout.xaxis.title.text.startswith("MFLOPs")
