"""Oracle, threshold cascade and learned router on hand-checked and small random data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from mrl_analysis.routing.cascade import (
    SplitSettings,
    cascade_study,
    cascade_study_reduced,
    confidence_and_correctness,
    evaluate_cascade,
    holdout_splits,
    learn_thresholds,
)
from mrl_analysis.routing.oracle import (
    accuracy_by_size,
    first_correct_shares,
    first_correct_table,
    majority_vote,
    oracle_summary,
)
from mrl_analysis.routing.plots import cascade_figure, first_correct_figure, router_figure
from mrl_analysis.routing.router import router_features, router_study
from mrl_analysis.routing.tradeoff import (
    oracle_points,
    single_size_points,
    size_factor_text,
    size_reduction,
)

NESTING = [4, 8, 16]
LABELS = np.arange(6)
# Predicted class per size (rows) and sample (columns); class 9 is always wrong.
PREDS = np.array(
    [
        [0, 1, 2, 9, 4, 9],
        [0, 9, 2, 3, 9, 9],
        [9, 1, 9, 3, 9, 9],
    ]
)


def _scores(preds: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[preds]


def _random_probabilities(g=4, n=400, c=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(g, n, c))
    logits[:, np.arange(n), labels] += np.linspace(0.5, 2.5, g)[:, None]
    p = np.exp(logits)
    return (p / p.sum(-1, keepdims=True)).astype(np.float32), labels


def test_oracle_summary_matches_hand_count():
    row = oracle_summary(_scores(PREDS), LABELS, NESTING).iloc[0]
    # Correct: size 4 -> samples 0,1,2,4; size 8 -> 0,2,3; size 16 -> 1,3; sample 5 never.
    assert row["oracle_accuracy"] == pytest.approx(5 / 6)
    assert row["best_size"] == 4 and row["best_accuracy"] == pytest.approx(4 / 6)
    assert row["largest_size_accuracy"] == pytest.approx(2 / 6)
    assert row["oracle_gap"] == pytest.approx(1 / 6)
    assert row["never_correct"] == pytest.approx(1 / 6)
    # Routed to 4, 4, 4, 8, 4 and (never correct) the largest, 16.
    assert row["oracle_expected_size"] == pytest.approx(40 / 6)
    # Votes: 0, 1, 2, 3 win; sample 4 is outvoted by 9, sample 5 all 9.
    assert row["majority_vote_accuracy"] == pytest.approx(4 / 6)
    from_preds = oracle_summary(PREDS, LABELS, NESTING)
    pd.testing.assert_frame_equal(from_preds, oracle_summary(_scores(PREDS), LABELS, NESTING))
    with pytest.raises(ValueError, match="predicted classes must have shape"):
        oracle_summary(PREDS[:2], LABELS, NESTING)


def test_first_correct_shares_match_hand_count():
    t = first_correct_shares(_scores(PREDS), LABELS, NESTING, eval_set="v2")
    assert t["first_correct"].tolist() == ["4", "8", "16", "never"]
    np.testing.assert_allclose(t["share"], [4 / 6, 1 / 6, 0, 1 / 6])
    assert t["truncate_dim"].isna().tolist() == [False, False, False, True]
    assert (t["eval_set"] == "v2").all()
    assert isinstance(first_correct_figure(t), go.Figure)
    wide = first_correct_table(t.assign(model="MRL"))
    assert wide.index.tolist() == ["4", "8", "16", "never"] and wide.columns.tolist() == ["v2"]
    np.testing.assert_allclose(wide["v2"], [4 / 6, 1 / 6, 0, 1 / 6])


def test_majority_vote_breaks_ties_towards_the_largest_size():
    preds = np.array([[1, 5, 7], [2, 5, 8], [3, 6, 8]])
    assert majority_vote(preds).tolist() == [3, 5, 8]


def test_oracle_is_at_least_every_single_size():
    p, labels = _random_probabilities(g=5, n=300)
    row = oracle_summary(p, labels, [1, 2, 4, 8, 16]).iloc[0]
    per_size = accuracy_by_size(p, labels, [1, 2, 4, 8, 16])["accuracy"]
    assert (row["oracle_accuracy"] >= per_size).all()
    assert row["oracle_gap"] >= 0


def test_confidence_averages_tta_probabilities():
    p = np.array([[[0.6, 0.4]], [[0.6, 0.4]]], dtype=np.float32)
    flipped = np.array([[[0.2, 0.8]], [[0.6, 0.4]]], dtype=np.float32)
    conf, correct = confidence_and_correctness(p, np.array([1]), [1, 2], tta_probabilities=flipped)
    np.testing.assert_allclose(conf[:, 0], [0.6, 0.6])
    assert correct[:, 0].tolist() == [True, False]
    with pytest.raises(ValueError, match="look like logits"):
        confidence_and_correctness(p * 5, np.array([1]), [1, 2])
    with pytest.raises(ValueError, match="tta_probabilities has shape"):
        confidence_and_correctness(p, np.array([1]), [1, 2], tta_probabilities=flipped[:1])


def test_cascade_with_extreme_thresholds_equals_single_sizes():
    p, labels = _random_probabilities()
    conf, correct = confidence_and_correctness(p, labels, [2, 4, 8, 16])
    acc = correct.mean(axis=1)
    low = evaluate_cascade(conf, correct, [2, 4, 8, 16], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(low["accuracy"], acc[0])
    assert (low["expected_size"] == 2).all()
    high = evaluate_cascade(conf, correct, [2, 4, 8, 16], [1.0, 1.0, 1.0])
    assert high["max_size"].tolist() == [4, 8, 16]
    np.testing.assert_allclose(high["accuracy"], acc[1:])  # every cap runs to its cap
    np.testing.assert_allclose(high["expected_size"], [4, 8, 16])


def test_cascade_costs_match_hand_count():
    conf = np.array([[0.9, 0.1, 0.1], [0.0, 0.9, 0.1], [0.5, 0.5, 0.5]])
    correct = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    t = evaluate_cascade(conf, correct, [2, 4, 8], [0.5, 0.5], num_classes=10)
    full = t.iloc[-1]  # stops at 2, 4 and 8: all correct
    assert full["accuracy"] == 1.0
    assert full["expected_size"] == pytest.approx(14 / 3)
    assert full["expected_cumulative_size"] == pytest.approx((2 + 6 + 14) / 3)
    assert full["expected_head_macs"] == pytest.approx(10 * 22 / 3)
    mrl_e = evaluate_cascade(conf, correct, [2, 4, 8], [0.5, 0.5], kind="mrl-e", num_classes=10)
    assert mrl_e.iloc[-1]["expected_head_macs"] == pytest.approx(10 * 14 / 3)
    capped = t.iloc[0]  # capped at 4: the third sample stops at 4 and is wrong there
    assert capped["accuracy"] == pytest.approx(2 / 3)


def test_learned_threshold_is_the_smallest_best_one():
    conf = np.array([[0.95, 0.85, 0.55, 0.35], [1, 1, 1, 1]])
    correct = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], dtype=bool)
    # Accuracy by threshold: 0.1-0.3 -> 2/4, 0.4-0.5 -> 3/4, 0.6-0.8 -> 4/4, 0.9-1 -> 3/4.
    grid = np.arange(1, 11) / 10
    assert learn_thresholds(conf, correct, [1, 2], grid).tolist() == [0.6]


def _reference_study(conf, correct, sizes, grid, held, evaluate):
    """The authors' algorithm, one threshold and one sample at a time."""
    out = []
    for h, e in zip(held, evaluate, strict=True):
        thresholds = []
        for i in range(len(sizes) - 1):
            accs = []
            for t in grid:
                hits = 0
                for n in h:
                    hits += correct[i, n] if conf[i, n] > t else correct[i + 1, n]
                accs.append(hits)
            thresholds.append(grid[int(np.argmax(accs))])
        for cap in range(1, len(sizes)):
            hits, size = 0, 0
            for n in e:
                used = next((j for j in range(cap) if conf[j, n] > thresholds[j]), cap)
                hits += correct[used, n]
                size += sizes[used]
            out.append((cap, hits / len(e), size / len(e), thresholds))
    return out


def test_cascade_study_matches_a_per_sample_reference():
    rng = np.random.default_rng(1)
    sizes, n = [2, 4, 8, 16], 120
    # Confidences on a 0.05 lattice hit grid values exactly, testing the strict ">".
    conf = rng.integers(0, 21, (4, n)) / 20
    correct = rng.random((4, n)) < np.array([[0.3], [0.5], [0.6], [0.7]])
    grid = np.arange(1, 11) / 10
    settings = SplitSettings(n_splits=3, holdout=40, grid=tuple(grid), seed=3)
    study = cascade_study_reduced(conf, correct, sizes, settings=settings, num_classes=5)
    held, evaluate = holdout_splits(n, 3, 40, seed=3)
    reference = _reference_study(conf, correct, sizes, grid, held, evaluate)
    for s, (h, e) in enumerate(zip(held, evaluate, strict=True)):
        assert len(h) == 40 and len(e) == 80 and not set(h) & set(e)
        got = study.results[study.results["split"] == s]
        ref = [r for r in reference[3 * s : 3 * s + 3]]
        np.testing.assert_allclose(got["accuracy"], [r[1] for r in ref])
        np.testing.assert_allclose(got["expected_size"], [r[2] for r in ref])
        got_thr = study.thresholds[study.thresholds["split"] == s]["threshold"]
        np.testing.assert_allclose(got_thr, ref[0][3])
    summary = study.summary()
    assert summary["max_size"].tolist() == [4, 8, 16]
    np.testing.assert_allclose(
        summary["accuracy_mean"], study.results.groupby("max_size")["accuracy"].mean()
    )


def test_cascade_study_from_probabilities_and_figure():
    p, labels = _random_probabilities(n=500)
    nesting = [2, 4, 8, 16]
    study = cascade_study(p, labels, nesting, settings=SplitSettings(n_splits=4, holdout=0.2))
    assert len(study.results) == 4 * 3 and len(study.thresholds) == 4 * 3
    assert study.results["expected_head_macs"].notna().all()
    mrl = accuracy_by_size(p, labels, nesting)
    ff = accuracy_by_size(p, labels, [32, 64, 128, 256], model="FF")
    points = pd.concat(
        [
            study.points(),
            single_size_points(mrl),
            single_size_points(ff),
            oracle_points(oracle_summary(p, labels, nesting)),
        ]
    )
    red = size_reduction(points, "MRL-AC", "FF").dropna()
    red = red[~red["baseline_dominated"]]
    fig = cascade_figure(points)
    assert len(fig.data) == 4
    if len(red):
        best = red["size_ratio"].max()
        assert size_factor_text(best) in fig.layout.annotations[0].text


def test_single_size_points_read_linear_accuracy_tables():
    p, labels = _random_probabilities(n=200)
    nesting = [2, 4, 8, 16]
    ours = single_size_points(accuracy_by_size(p, labels, nesting))
    long = pd.DataFrame(
        {
            "model": "MRL",
            "truncate_dim": np.repeat(nesting, 2),
            "metric": ["top1", "top5"] * 4,
            "value": np.ravel([[a, 1.0] for a in ours["accuracy"]]),  # fractions, as tables
            "ci_low": np.ravel([[a, 1.0] for a in ours["accuracy_ci_low"]]),
            "ci_high": np.ravel([[a, 1.0] for a in ours["accuracy_ci_high"]]),
        }
    )
    pd.testing.assert_frame_equal(single_size_points(long), ours)
    # The bootstrap interval of each size's accuracy travels with its point.
    assert (ours["accuracy_ci_low"] < ours["accuracy"]).all()
    assert (ours["accuracy"] < ours["accuracy_ci_high"]).all()


def test_size_reduction_matches_hand_count():
    points = pd.DataFrame(
        {
            "method": ["MRL-AC"] * 3 + ["FF"] * 4,
            "label": "",
            "expected_size": [10, 20, 40, 64, 128, 256, 512],
            "accuracy": [0.5, 0.6, 0.7, 0.55, 0.6, 0.75, 0.58],
            "accuracy_std": np.nan,
        }
    )
    red = size_reduction(points, "MRL-AC", "FF")
    np.testing.assert_allclose(red["matched_size"], [20, 20, np.nan, 20])
    np.testing.assert_allclose(red["size_ratio"], [3.2, 6.4, np.nan, 25.6])
    # FF-512 is less accurate than FF-128 and FF-256: 25.6× against it would overstate.
    assert red["baseline_dominated"].tolist() == [False, False, False, True]
    fig = cascade_figure(points)
    assert "as FF-128 at ~20 dims: 6.4× smaller" in fig.layout.annotations[0].text
    # The text is a boxed label clear of the curves; the arrow joins the two points exactly.
    label, arrow = fig.layout.annotations
    assert label.xref == "paper" and not label.showarrow
    assert arrow.text == "" and arrow.showarrow is not False
    assert (arrow.ax, arrow.ay) == pytest.approx((np.log10(128), 0.6))
    assert (arrow.x, arrow.y) == pytest.approx((np.log10(20), 0.6))
    with pytest.raises(ValueError, match="'router'"):
        size_reduction(points, "router", "FF")
    with pytest.raises(ValueError, match="fraction"):
        size_reduction(points, "MRL-AC", "FF", tolerance=1.5)  # points, not a fraction
    # Five points of slack (0.05): FF-64 is matched at 10 dims and FF-256 (0.75) at 40 (0.70).
    loose = size_reduction(points, "MRL-AC", "FF", tolerance=0.05)
    np.testing.assert_allclose(loose["matched_size"], [10, 20, 40, 20])


def test_size_factor_text_is_true_both_ways():
    assert size_factor_text(6.4) == "6.4× smaller"
    assert size_factor_text(0.625) == "needs 1.6× the size"  # never "0.6× smaller"
    assert size_factor_text(1.01) == "the same size"
    with pytest.raises(ValueError, match="positive"):
        size_factor_text(float("nan"))


def test_cascade_figure_says_needs_the_size_when_the_curve_is_larger():
    points = pd.DataFrame(
        {
            "method": ["MRL-AC"] * 2 + ["FF"] * 2,
            "label": "",
            "expected_size": [10, 40, 4, 8],
            "accuracy": [0.5, 0.7, 0.6, 0.65],
            "accuracy_std": np.nan,
        }
    )
    red = size_reduction(points, "MRL-AC", "FF")
    np.testing.assert_allclose(red["size_ratio"], [0.1, 0.2])
    label = cascade_figure(points).layout.annotations[0].text
    assert "as FF-8 at ~40 dims: needs 5.0× the size" in label and "smaller" not in label


def test_router_extremes_and_curve():
    p, labels = _random_probabilities(n=600)
    nesting = [2, 4, 8, 16]
    features = router_features(p, nesting, [2, 4])
    assert features.shape == (600, 7)  # 3 per input size + their top-1 agreement
    study = router_study(
        p,
        labels,
        nesting,
        input_sizes=[2],
        settings=SplitSettings(n_splits=2),
        cost_weights=[0.0, 1e-3, 10.0],
    )
    s = study.summary().set_index("cost_weight")
    # An expensive dimension sends every sample to the smallest size.
    assert s.loc[10.0, "expected_size_mean"] == 2
    _, correct = confidence_and_correctness(p, labels, nesting)
    _, evaluate = holdout_splits(600, 2, 0.2, seed=0)
    assert s.loc[10.0, "accuracy_mean"] == pytest.approx(correct[0][evaluate].mean(axis=1).mean())
    assert s["expected_size_mean"].is_monotonic_decreasing
    assert s.loc[0.0, "accuracy_mean"] > s.loc[10.0, "accuracy_mean"]
    points = pd.concat([study.points(), oracle_points(oracle_summary(p, labels, nesting))])
    fig = router_figure(points, zoom=["router"])
    assert len(fig.data) == 2 and fig.data[0].error_x.array is None  # no size std drawn
    assert fig.data[0].error_y.array is not None
    assert fig.layout.yaxis.range[0] == pytest.approx(points["accuracy"].min() - 0.01)
    with pytest.raises(ValueError, match="input_sizes"):
        router_study(p, labels, nesting, input_sizes=[3])


def test_plane_draws_intervals_and_never_clips_the_oracle_star():
    p, labels = _random_probabilities(n=300)
    nesting = [1, 2, 4, 8]
    study = cascade_study(p, labels, nesting, settings=SplitSettings(n_splits=6))
    summary = study.summary()
    assert {"accuracy_ci_low", "accuracy_ci_high"} <= set(summary.columns)
    # The interval over splits holds the middle 95% of the splits' accuracies.
    per_split = study.results[study.results.max_size == 8]["accuracy"]
    top = summary[summary.max_size == 8].iloc[0]
    assert per_split.min() <= top.accuracy_ci_low <= top.accuracy_mean <= top.accuracy_ci_high
    assert top.accuracy_ci_high <= per_split.max()
    points = pd.concat([study.points(), oracle_points(oracle_summary(p, labels, nesting))])
    fig = cascade_figure(points, curve="MRL-AC", zoom=["MRL-AC"])
    cascade, star = fig.data
    np.testing.assert_allclose(
        cascade.error_y.array, summary["accuracy_ci_high"] - summary["accuracy_mean"]
    )
    assert star.marker.symbol == "star" and star.cliponaxis is False
    assert star.error_y.arrayminus[0] > 0  # the oracle's bootstrap interval
    assert fig.layout.yaxis.range[1] > star.y[0] + star.error_y.array[0]
