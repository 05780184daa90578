"""Retrieval figures draw the table's fractions on percent axes and the shared size axis."""

from __future__ import annotations

import pandas as pd
import pytest

from mrl_analysis.figures.style import TEMPLATE
from mrl_analysis.retrieval.plots import (
    cost_tradeoff_figure,
    metric_vs_size_figure,
    shortlist_ablation_figure,
)
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
    colors = [t.line.color for t in ablation.data]
    assert colors[0] == colors[1] != colors[2] == colors[3]  # a curve and its reference
    assert ablation.layout.template.layout.colorway[0] == colors[0]
    no_reference = shortlist_ablation_figure(table[table["method"] != "single-shot"])
    assert len(no_reference.data) == 2
    assert TEMPLATE == "mrl"
