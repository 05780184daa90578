"""Figures of the superclass and per-class tables: lines, bars, heatmap and histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from test_superclass_metrics import (
    CLASS_IDS,
    HIERARCHY,
    LABELS,
    NESTING,
    SCORES,
    outlier_table,
    single_size_table,
)

from mrl_analysis.data.hierarchy import SuperclassMap
from mrl_analysis.superclass.metrics import per_superclass_accuracy, superclass_accuracy
from mrl_analysis.superclass.per_class import (
    TRENDS,
    classify_trends,
    per_class_accuracy,
    trend_counts,
)
from mrl_analysis.superclass.plots import (
    per_class_accuracy_figure,
    per_superclass_figure,
    relative_accuracy_figure,
    share_histogram_bins,
    spread_marker_labels,
    superclass_accuracy_figure,
    trend_counts_figure,
    within_superclass_error_figure,
)


@pytest.fixture
def smap():
    return SuperclassMap.from_hierarchy(HIERARCHY, CLASS_IDS, reject="other")


def test_superclass_figures_draw_one_line_per_group(smap):
    mrl = superclass_accuracy(SCORES, LABELS, NESTING, smap, model="MRL")
    ff = superclass_accuracy(SCORES[::-1], LABELS, NESTING, smap, model="FF")
    both = pd.concat([mrl, ff])
    fig = superclass_accuracy_figure(both, title="mine")
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    assert fig.layout.title.text == "mine"
    # The size axis of the workbench, fractions shown as percent.
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == NESTING
    assert fig.layout.yaxis.tickformat == ".0%"
    assert len(within_superclass_error_figure(both).data) == 2
    per = per_superclass_accuracy(SCORES, LABELS, NESTING, smap)
    assert len(per_superclass_figure(per).data) == 3
    assert len(per_superclass_figure(per, superclasses=["animal"]).data) == 1
    with pytest.raises(ValueError, match="one model"):
        per_superclass_figure(pd.concat([per, per.assign(model="FF")]))


def test_trend_counts_figure_groups_models():
    table = pd.DataFrame(
        {
            "model": ["MRL"] * 4 + ["FF"] * 2,
            "truncate_dim": [1, 2, 1, 2, 1, 2],
            "class_index": [0, 0, 1, 1, 0, 0],
            "class_name": ["a", "a", "b", "b", "a", "a"],
            "n_correct": [1, 2, 2, 1, 2, 2],
        }
    )
    counts = trend_counts(classify_trends(table))
    fig = trend_counts_figure(counts)
    assert sorted(trace.name for trace in fig.data) == ["FF", "MRL"]
    mrl = next(trace for trace in fig.data if trace.name == "MRL")
    # One class rises, one falls: one "monotonic increase" and one "no clear trend".
    assert dict(zip(mrl.x, mrl.y, strict=True))["monotonic increase"] == 1
    assert list(fig.layout.xaxis.categoryarray) == list(TRENDS)


def test_per_class_heatmap_keeps_class_order():
    t = outlier_table()
    fig = per_class_accuracy_figure(t)
    assert list(fig.data[0].y) == list("abcdef")
    assert list(fig.data[0].x) == ["8", "16", "32"]
    with pytest.raises(ValueError, match="one model"):
        per_class_accuracy_figure(pd.concat([t, t.assign(model="FF")]))


def test_relative_accuracy_histograms_name_the_outliers():
    t = outlier_table()
    fig = relative_accuracy_figure(t)  # every size but the reference, 32
    marked = [tr for tr in fig.data if isinstance(tr, go.Scatter)]
    assert [list(tr.text) for tr in marked] == [["f"], ["f"]]
    bins = [tr.xbins for tr in fig.data if isinstance(tr, go.Histogram)]
    assert len(bins) == 2 and bins[0] == bins[1] and bins[0].size is not None  # one grid
    assert fig.layout.xaxis.tickformat == ".0%"
    # Responsive: no fixed width; one row of panels plus title and axis titles.
    assert (fig.layout.width, fig.layout.height) == (None, 440)
    # The names sit in a band below the bars (y < 0, text under the marker), never on a bar.
    assert all(y < 0 for tr in marked for y in tr.y)
    assert all(pos.startswith("bottom") for tr in marked for pos in tr.textposition)
    assert fig.layout.yaxis.range[0] < min(marked[0].y) and min(fig.layout.yaxis.tickvals) == 0
    assert relative_accuracy_figure(t, width=900).layout.width == 900
    many = relative_accuracy_figure(t, sizes=[8, 16, 32], highlight=["a"])
    assert len(many.data) == 6


def test_relative_accuracy_rows_grow_the_figure():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 5)
    preds = np.where(rng.random((10, 15)) < 0.7, labels, (labels + 1) % 3)
    scores = np.eye(3, dtype=np.float32)[preds]
    t = per_class_accuracy(scores, labels, [2**i for i in range(10)], class_names=list("abc"))
    fig = relative_accuracy_figure(t)  # nine panels: three rows of three
    assert fig.layout.height == 160 + 3 * 280


def test_relative_accuracy_of_a_single_size_model_is_an_empty_figure():
    fig = relative_accuracy_figure(single_size_table(), n_outliers=2)
    assert len(fig.data) == 0 and "One Size Only" in fig.layout.title.text


def test_spread_marker_labels_puts_names_apart():
    fig = go.Figure(
        [
            go.Scatter(x=[0.3, 0.1, 0.2], y=[0, 0, 0], mode="markers+text", text=["c", "a", "b"]),
            go.Scatter(x=[0.2, 0.1], y=[0, 0], mode="markers+text", text=["d", "e"]),
            go.Histogram(x=[0.1, 0.2]),
        ]
    )
    spread_marker_labels(fig)
    assert list(fig.data[0].textposition) == ["top right", "top left", "top center"]
    assert list(fig.data[1].textposition) == ["top right", "top left"]
    spread_marker_labels(fig, side="bottom")
    assert list(fig.data[0].textposition) == ["bottom right", "bottom left", "bottom center"]
    with pytest.raises(ValueError, match="side"):
        spread_marker_labels(fig, side="left")


def test_share_histogram_bins_uses_one_grid():
    fig = go.Figure([go.Histogram(x=[-1.0, 0.0]), go.Histogram(x=[0.01, 0.02]), go.Scatter(x=[0])])
    share_histogram_bins(fig, nbins=4)
    for trace in fig.data[:2]:
        assert trace.xbins.start == -1.0 and trace.xbins.size == pytest.approx(0.255)
    assert share_histogram_bins(go.Figure()) is not None
