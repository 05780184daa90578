"""Notebook 01's library side, and notebook 01 itself run by the batch runner on real data."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ROOT, needs_fashion_mnist

from mrl_analysis.accuracy.study import smallest_size_within


def test_smallest_size_within_tolerance():
    table = pd.DataFrame(
        {
            "label": ["MRL"] * 4,
            "metric": ["top1"] * 4,
            "truncate_dim": [1, 2, 4, 8],
            "value": [50.0, 80.0, 89.5, 90.0],
        }
    )
    row = smallest_size_within(table, tolerance=1.0).iloc[0]
    assert (row.best_dim, row.smallest_dim, row.reduction) == (8, 4, 2.0)
    assert smallest_size_within(table, tolerance=0.0).iloc[0].smallest_dim == 8
    assert smallest_size_within(table, tolerance=40.0).iloc[0].smallest_dim == 1


@needs_fashion_mnist
@pytest.mark.integration
def test_notebook_01_runs_on_real_caches(tiny_fmnist_models, tmp_path):
    from mrl_analysis.app.runner import run_batch

    batch = {
        "name": "tiny",
        "root": str(ROOT),
        "runs_dir": str(tmp_path / "runs"),
        "figures_dir": str(tmp_path / "figures"),
        "defaults": {
            "models": {
                "MRL": str(tiny_fmnist_models["mrl"]),
                "MRL-E": str(tiny_fmnist_models["mrl-e"]),
                "FF-512": str(tiny_fmnist_models["ff-512"]),
            },
            "cache_root": str(tmp_path / "cache"),
        },
        "notebooks": [
            {
                "name": "acc",
                "path": "notebooks/01_per_dimension_accuracy.ipynb",
                "parameters": {"baseline_model": "FF-512", "knn_k": [1]},
            }
        ],
    }
    summary = run_batch(batch, progress=False)
    assert list(summary["status"]) == ["ok"], summary["error"].tolist()
    figures = tmp_path / "figures" / "tiny" / "acc"
    for name in ("linear_accuracy", "linear_top5", "knn_accuracy"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
        assert (figures / f"{name}.html").exists()
    knn = pd.read_csv(figures / "knn_accuracy.csv")
    assert {"FF Rand. FS", "FF SVD", "FF JL", "MRL", "MRL-E"} <= set(knn["label"])
    linear = pd.read_csv(figures / "linear_accuracy.csv")
    mrl = linear[(linear.label == "MRL") & (linear.metric == "top1")]
    assert sorted(mrl.truncate_dim) == [1, 2, 4, 8, 512]
    assert (mrl.value > 20).all()
    # SVD at the full size is a rotation: its 1-NN accuracy equals the raw features'.
    full = knn[(knn.truncate_dim == 512) & (knn.metric == "1-NN")].set_index("label")["value"]
    assert full["FF SVD"] == pytest.approx(full["FF Rand. FS"], abs=0.2)
