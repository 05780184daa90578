"""Figures of the per-size accuracy tables: one line per legend label, size and percent axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.accuracy.baselines import baseline_knn_accuracy
from mrl_analysis.accuracy.metrics import knn_accuracy
from mrl_analysis.accuracy.plots import accuracy_figure


def clustered(n: int, d: int, classes: int, seed: int, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    labels = rng.integers(0, classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def test_accuracy_figure_one_line_per_label_on_log_axis():
    rng = np.random.default_rng(0)
    nesting = [8, 16, 32]

    def rows(model, method, sizes, label):
        return pd.DataFrame(
            {
                "model": model,
                "method": method,
                "truncate_dim": sizes,
                "metric": "top1",
                "value": rng.uniform(0.5, 0.8, len(sizes)),
                "label": label,
            }
        )

    table = pd.concat(
        [
            rows("MRL", "linear", nesting, "MRL"),
            rows("MRL-E", "linear", nesting, "MRL-E"),
            rows("MRL-E", "interpolated", [8, 12, 16, 24, 32], "MRL-E (interpolated)"),
            *(rows(f"FF-{m}", "linear", [m], "FF") for m in nesting),
            rows("FF", "svd", nesting, "FF SVD"),
            rows("MRL", "linear", nesting, "MRL").assign(metric="top5"),
        ],
        ignore_index=True,
    )
    fig = accuracy_figure(table, "top1", title="test")
    names = [trace.name for trace in fig.data]
    assert names == ["MRL", "MRL-E", "MRL-E (interpolated)", "FF", "FF SVD"]
    ff = next(trace for trace in fig.data if trace.name == "FF")
    assert list(ff.x) == nesting
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == [8, 12, 16, 24, 32]
    assert list(fig.layout.xaxis.ticktext) == ["8", "12", "16", "24", "32"]
    # The table holds fractions; the axis shows them as percent.
    assert fig.layout.yaxis.title.text == "Top-1 accuracy"
    assert fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.template.layout.font.size == 13  # the workbench template
    assert fig.layout.title.text == "test"
    with pytest.raises(ValueError, match="no rows with metric 'top3'"):
        accuracy_figure(table, "top3")


def test_accuracy_figure_from_real_tables():
    train, train_labels = clustered(200, 16, 4, seed=14)
    test, test_labels = clustered(60, 16, 4, seed=15)
    table = pd.concat(
        [
            knn_accuracy(train, train_labels, test, test_labels, [2, 4, 8, 16], model="MRL"),
            baseline_knn_accuracy(train, train_labels, test, test_labels, [2, 4, 8, 16]),
        ]
    )
    fig = accuracy_figure(table, "1-NN")
    assert [trace.name for trace in fig.data] == ["MRL", "FF Rand. FS", "FF SVD", "FF JL"]
    assert fig.layout.yaxis.title.text == "1-NN accuracy"
    assert fig.layout.title.text == "1-NN Accuracy vs Representation Size"
    mrl = next(trace for trace in fig.data if trace.name == "MRL")
    assert 0 < min(mrl.y) and max(mrl.y) <= 1
    # Every point carries its bootstrap interval as asymmetric error bars.
    rows = table[table["label"] == "MRL"].sort_values("truncate_dim")
    assert mrl.error_y.symmetric is False
    np.testing.assert_allclose(mrl.error_y.array, rows["ci_high"] - rows["value"])
    np.testing.assert_allclose(mrl.error_y.arrayminus, rows["value"] - rows["ci_low"])
    assert (np.asarray(mrl.error_y.array) > 0).any()


def test_dense_size_grid_is_ticked_at_powers_of_two():
    sizes = list(range(8, 33))
    table = pd.DataFrame(
        {"truncate_dim": sizes, "metric": "top1", "value": 0.5, "label": "MRL-E (interpolated)"}
    )
    fig = accuracy_figure(table)
    assert list(fig.layout.xaxis.tickvals) == [8, 16, 32]
    assert fig.layout.xaxis.type == "log"
