"""Notebook 01's library side (headlines), and notebook 01 itself run on real data."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import needs_fashion_mnist, run_tiny_notebook

from mrl_analysis.accuracy.headlines import HEADLINE_COLUMNS, size_headlines


def _table() -> pd.DataFrame:
    mrl = pd.DataFrame(
        {
            "label": "MRL",
            "metric": "top1",
            "truncate_dim": [8, 1, 4, 2],  # any order: sizes are sorted per label
            "value": [0.90, 0.50, 0.895, 0.80],
        }
    )
    # FF-k models form one line; its best size is not its largest.
    ff = pd.DataFrame(
        {"label": "FF", "metric": "top1", "truncate_dim": [2, 8, 64], "value": [0.6, 0.9, 0.88]}
    )
    top5 = mrl.assign(metric="top5", value=[0.99, 0.90, 0.99, 0.95])
    return pd.concat([mrl, ff, top5], ignore_index=True)


def test_size_headlines_smallest_size_within_tolerance_of_the_best():
    h = size_headlines(_table(), tolerance=0.01, metric="top1")
    assert list(h.columns) == HEADLINE_COLUMNS
    assert h["label"].tolist() == ["MRL", "FF"]
    mrl, ff = h.iloc[0], h.iloc[1]
    assert (mrl.reference_dim, mrl.smallest_dim, mrl.reduction) == (8, 4, 2.0)
    assert mrl.value == 4 and mrl.smallest_value == pytest.approx(0.895)
    assert mrl.headline == "smallest_within_tolerance"
    assert mrl.text == (
        "MRL (top1): 89.5% at 4 dims, within 1 point of its best (90.0% at 8 dims): 2× smaller"
    )
    # FF's best is FF-8: FF-64 is 2 points worse and never the reference.
    assert (ff.reference_dim, ff.smallest_dim, ff.reduction) == (8, 8, 1.0)
    assert (
        ff.text == "FF (top1): no smaller size comes within 1 point of its best (90.0% at 8 dims)"
    )


def test_size_headlines_tolerance_is_a_fraction():
    table = _table()
    strict = size_headlines(table, tolerance=0.0, metric="top1").set_index("label")
    assert strict.loc["MRL", "smallest_dim"] == 8
    loose = size_headlines(table, tolerance=0.4, metric="top1").set_index("label")
    assert loose.loc["MRL", "smallest_dim"] == 1 and loose.loc["MRL", "reduction"] == 8.0
    assert "within 40 points" in loose.loc["MRL", "text"]
    every = size_headlines(table, tolerance=0.005)
    assert every[["label", "metric"]].values.tolist() == [
        ["MRL", "top1"],
        ["FF", "top1"],
        ["MRL", "top5"],
    ]
    # top5: 0.99 at 4 and at 8 dims, so 4 dims is as good as the best.
    assert every.iloc[2]["smallest_dim"] == 4
    with pytest.raises(ValueError, match="fraction"):
        size_headlines(table, tolerance=1.5)
    with pytest.raises(ValueError, match="no rows with metric 'top3'"):
        size_headlines(table, metric="top3")


@needs_fashion_mnist
@pytest.mark.integration
def test_notebook_01_runs_on_real_caches(tiny_fmnist_models, tmp_path):
    figures = run_tiny_notebook(
        tiny_fmnist_models,
        tmp_path,
        "notebooks/01_per_dimension_accuracy.ipynb",
        {"baseline_model": "FF-512", "knn_k": [1]},
    )
    for name in ("linear_accuracy", "linear_top5", "knn_accuracy"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
        assert (figures / f"{name}.html").exists()
    knn = pd.read_csv(figures / "knn_accuracy.csv")
    assert {"FF Rand. FS", "FF SVD", "FF JL", "MRL", "MRL-E"} <= set(knn["label"])
    linear = pd.read_csv(figures / "linear_accuracy.csv")
    mrl = linear[(linear.label == "MRL") & (linear.metric == "top1")]
    assert sorted(mrl.truncate_dim) == [1, 2, 4, 8, 512]
    assert (mrl.value > 0.2).all() and (linear.value <= 1).all()
    # SVD at the full size is a rotation: its 1-NN accuracy equals the raw features'.
    full = knn[(knn.truncate_dim == 512) & (knn.metric == "1-NN")].set_index("label")["value"]
    assert full["FF SVD"] == pytest.approx(full["FF Rand. FS"], abs=0.002)
