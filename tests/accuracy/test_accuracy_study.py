"""Notebook 01's library side (size studies: intervals, adjacent tests, headlines), and
notebook 01 itself run on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import needs_fashion_mnist, run_tiny_notebook
from hand_caches import hand_cache, one_hot_logits, predictions_right_on

from mrl_analysis.accuracy.headlines import HEADLINE_COLUMNS, size_headlines, step_headlines
from mrl_analysis.accuracy.metrics import COLUMNS, Outcomes
from mrl_analysis.accuracy.study import knn_outcomes_of, linear_study, size_study

N = 4000
C = 5
LABELS = np.arange(N) % C


def _right(rates: list[float]) -> np.ndarray:
    """Nested correctness ``[G, N]``: a sample right at one size is right at larger ones."""
    order = np.random.default_rng(0).permutation(N)
    rank = np.empty(N, int)
    rank[order] = np.arange(N)
    return np.stack([rank < r * N for r in rates])


def test_size_study_intervals_tests_and_smallest_size():
    # 2 → 4 gains 20 points (real), 4 → 8 gains 0.1 point (noise), 8 → 16 gains 0.4 point.
    correct = _right([0.60, 0.80, 0.801, 0.805])
    mrl = Outcomes("MRL", "linear", "MRL", [2, 4, 8, 16], ["top1"], correct[:, None])
    ff = [
        Outcomes(f"FF-{m}", "linear", "FF", [m], ["top1"], correct[i : i + 1, None])
        for i, m in [(0, 2), (3, 16)]
    ]
    study = size_study([mrl, *ff], tolerance=0.01)
    table = study.table
    assert list(table.columns) == COLUMNS
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    assert (table["ci_high"] - table["ci_low"]).between(0.01, 0.06).all()

    tests = study.tests[study.tests["label"] == "MRL"]
    assert tests[["truncate_dim", "next_dim"]].values.tolist() == [[2, 4], [4, 8], [8, 16]]
    assert tests["significant"].tolist() == [True, False, True]
    assert tests["only_smaller"].tolist() == [0, 0, 0]  # nested: no sample is lost
    # The FF-k models form one line: FF-2 vs FF-16 on the same samples.
    ff_test = study.tests[study.tests["label"] == "FF"]
    assert ff_test[["truncate_dim", "next_dim"]].values.tolist() == [[2, 16]]

    smallest = study.smallest.set_index("label")
    assert smallest.loc["MRL", "smallest_dim"] == 4
    assert smallest.loc["MRL", "reference_dim"] == 16
    assert smallest.loc["MRL", "ci_low_dim"] <= 4 <= smallest.loc["MRL", "ci_high_dim"]
    assert smallest.loc["FF", "smallest_dim"] == 16

    h = study.headlines
    assert list(h.columns) == HEADLINE_COLUMNS
    text = h.set_index(["headline", "label"])["text"]
    low, high = smallest.loc["MRL", ["ci_low_dim", "ci_high_dim"]]
    span = "4 dims" if low == high else f"{low}–{high} dims"
    assert text["smallest_within_tolerance", "MRL"] == (
        "MRL (top1): 4 dims is the smallest size within 1 point of (or above) its 16 dims "
        f"accuracy: 80.0% vs 80.5% (95% interval of that size: {span}), 4× smaller"
    )
    assert text["smallest_within_tolerance", "FF"].startswith(
        "FF (top1): no size below 16 dims comes within 1 point of its 80.5% there"
    )
    noise = text["noise_steps", "MRL"]
    assert "not significant: 4→8 (+0.1 points" in noise
    assert "the last significant step is 8→16 (+0.4 points" in noise


def test_a_line_with_two_results_at_one_size_is_refused():
    correct = _right([0.5])[:, None]
    twice = [Outcomes(f"FF-{i}", "linear", "FF", [8], ["top1"], correct) for i in range(2)]
    with pytest.raises(ValueError, match="two results at one size"):
        size_study(twice)
    with pytest.raises(ValueError, match="fraction"):
        size_study(twice[:1], tolerance=2)


def test_linear_study_on_hand_made_caches():
    right = _right([0.4, 0.7, 0.71])
    logits = one_hot_logits(predictions_right_on(LABELS, right, C), C)
    caches = {"MRL": hand_cache("mrl", [2, 8, 32], logits, LABELS)}
    study = linear_study(caches, topk=(1,), tolerance=0.02, n_boot=200)
    top1 = study.table.set_index("truncate_dim")["value"]
    assert top1.to_dict() == pytest.approx({2: 0.4, 8: 0.7, 32: 0.71})
    assert study.smallest.iloc[0]["smallest_dim"] == 8


def test_knn_on_a_query_sample_scores_the_same_samples_for_every_model():
    rng = np.random.default_rng(3)
    n, c = 60, 3
    labels = rng.integers(0, c, n)
    # Features that put each sample next to its own class's database points at every size.
    centers = rng.normal(size=(c, 8)) * 5
    feats = (centers[labels] + rng.normal(size=(n, 8)) * 0.1).astype(np.float32)
    logits = np.zeros((2, n, c), np.float32)

    def make(kind, nest):
        return hand_cache(kind, nest, logits[: len(nest)], labels, features=feats)

    evals = {"MRL": make("mrl", [4, 8]), "FF-8": make("ff", [8])}
    full = knn_outcomes_of(evals, evals, min_dim=4)
    some = knn_outcomes_of(evals, evals, min_dim=4, max_queries=25, seed=1)
    assert [o.correct.shape[-1] for o in full] == [n, n]
    assert [o.correct.shape[-1] for o in some] == [25, 25]
    assert all(o.correct.all() for o in some)
    with pytest.raises(ValueError, match="max_queries"):
        knn_outcomes_of(evals, evals, max_queries=0)


def test_headlines_need_their_tables():
    with pytest.raises(ValueError, match="lacks columns"):
        size_headlines(pd.DataFrame({"label": ["MRL"]}))
    assert step_headlines(pd.DataFrame(columns=["label", "metric", "significant"])).empty


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
    assert (linear.ci_low <= linear.value).all() and (linear.value <= linear.ci_high).all()
    # SVD at the full size is a rotation: its 1-NN accuracy equals the raw features'.
    full = knn[(knn.truncate_dim == 512) & (knn.metric == "1-NN")].set_index("label")["value"]
    assert full["FF SVD"] == pytest.approx(full["FF Rand. FS"], abs=0.002)


def test_wide_view_states_value_and_interval_in_percent():
    correct = _right([0.5, 0.75])[:, None]
    study = size_study([Outcomes("MRL", "linear", "MRL", [2, 8], ["top1"], correct)])
    wide = study.wide("top1")
    assert wide.index.tolist() == [2, 8] and wide.columns.tolist() == ["MRL"]
    row = study.table.iloc[1]
    assert wide.loc[8, "MRL"] == (f"75.0% [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]")
    with pytest.raises(ValueError, match="no rows with metric 'top5'"):
        study.wide("top5")
