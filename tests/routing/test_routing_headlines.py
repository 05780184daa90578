"""The numbers notebook 03 states, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.routing.headlines import (
    cascade_headlines,
    first_correct_headlines,
    oracle_headlines,
    reduction_headlines,
    router_headlines,
)
from mrl_analysis.routing.oracle import first_correct_shares, oracle_summary
from mrl_analysis.routing.tradeoff import size_reduction, size_reductions

LABELS = np.arange(6)
NESTING = [4, 8, 16]
# Correct: size 4 -> samples 0,1,2,4; size 8 -> 0,2,3; size 16 -> 1,3; sample 5 never.
PREDS = np.array([[0, 1, 2, 9, 4, 9], [0, 9, 2, 3, 9, 9], [9, 1, 9, 3, 9, 9]])


def _value(table: pd.DataFrame, headline: str, subject: str | None = None) -> float:
    rows = table[table["headline"] == headline]
    if subject is not None:
        rows = rows[rows["subject"] == subject]
    assert len(rows) == 1, (headline, subject, rows)
    return float(rows["value"].iloc[0])


def _text(table: pd.DataFrame, headline: str, subject: str | None = None) -> str:
    rows = table[table["headline"] == headline]
    if subject is not None:
        rows = rows[rows["subject"] == subject]
    return str(rows["text"].iloc[0])


def _oracle_tables():
    oracle = pd.concat(
        [
            oracle_summary(PREDS, LABELS, NESTING, eval_set="test"),
            oracle_summary(PREDS[::-1].copy(), LABELS, NESTING, eval_set="flip"),
            oracle_summary(PREDS[:1].copy(), LABELS, [4], model="FF", eval_set="test"),
        ]
    )
    shares = pd.concat(
        [
            first_correct_shares(PREDS, LABELS, NESTING, eval_set="test"),
            first_correct_shares(PREDS[::-1].copy(), LABELS, NESTING, eval_set="flip"),
            first_correct_shares(PREDS[:1].copy(), LABELS, [4], model="FF", eval_set="test"),
        ]
    )
    return oracle, shares


def test_oracle_headlines_match_hand_count():
    oracle, shares = _oracle_tables()
    h = oracle_headlines(oracle, shares, "MRL")
    assert list(h.columns) == ["headline", "subject", "value", "text"]
    assert set(h["subject"]) == {"test", "flip"}
    assert _value(h, "oracle_accuracy", "test") == pytest.approx(5 / 6)
    assert _value(h, "best_accuracy", "test") == pytest.approx(4 / 6)
    assert _value(h, "oracle_gap", "test") == pytest.approx(1 / 6)
    assert _value(h, "never_correct", "test") == pytest.approx(1 / 6)
    assert _value(h, "oracle_expected_size", "test") == pytest.approx(40 / 6)
    # First correct at 4, 4, 4, 8, 4 for the five samples some size gets right.
    assert _value(h, "smallest_correct_size", "test") == pytest.approx(24 / 5)
    assert _value(h, "majority_vote_accuracy", "test") == pytest.approx(4 / 6)
    # Reversed rows: first correct at 4 for samples 1, 3, at 8 for 0, 2, at 16 for 4.
    assert _value(h, "smallest_correct_size", "flip") == pytest.approx(40 / 5)
    assert "16.67 points above" in _text(h, "oracle_gap", "test")
    # The oracle summary carries bootstrap intervals over the samples; the sentences say them.
    row = oracle.iloc[0]
    assert _text(h, "oracle_accuracy", "test").endswith(
        f"(95% interval {100 * row.oracle_accuracy_ci_low:.2f}–"
        f"{100 * row.oracle_accuracy_ci_high:.2f}%)"
    )
    assert "points above the best single size (95% interval " in _text(h, "oracle_gap", "test")
    assert "d = 4, gets 66.67%" in _text(h, "best_accuracy", "test")
    with pytest.raises(ValueError, match="no first-correct rows for model .MRL-E."):
        oracle_headlines(oracle, shares[shares.model == "MRL"], "MRL-E")


def test_first_correct_headlines_sum_to_one():
    _, shares = _oracle_tables()
    h = first_correct_headlines(shares, "MRL", "test")
    assert h["headline"].tolist() == ["right_at_smallest", "needs_larger_size", "never_right"]
    np.testing.assert_allclose(h["value"], [4 / 6, 1 / 6, 1 / 6])
    assert _text(h, "right_at_smallest") == (
        "On test, 66.7% of the samples are already right at 4 dim(s)"
    )
    with pytest.raises(ValueError, match="eval set 'v2'"):
        first_correct_headlines(shares, "MRL", "v2")


def test_cascade_headlines_report_best_caps_and_stalls():
    best = pd.DataFrame(
        {
            "model": ["MRL-AC", "MRL-E-AC"],
            "max_size": [16, 8],
            "accuracy_mean": [0.9, 0.85],
            "accuracy_std": [0.01, 0.02],
            "expected_size_mean": [3.5, 2.25],
            "expected_size_std": [0.2, 0.1],
            "expected_head_macs_mean": [120.0, 22.5],
        }
    )
    stalled = pd.DataFrame(
        {
            "model": ["MRL-AC", "MRL-AC"],
            "truncate_dim": [2, 4],
            "n_splits": [20, 3],
            "share_of_splits": [20 / 30, 3 / 30],
        }
    )
    h = cascade_headlines(best, stalled)
    assert _value(h, "best_cap_accuracy", "MRL-E-AC") == 0.85
    assert _value(h, "best_cap_expected_size", "MRL-AC") == 3.5
    assert _value(h, "best_cap_head_macs", "MRL-AC") == 120.0
    assert (
        _text(h, "best_cap_accuracy", "MRL-AC") == "MRL-AC: best accuracy 90.00% ± 1.00% (cap 16)"
    )
    # Only d = 2 stalls in at least half of the splits.
    stall = h[h["headline"] == "stalled_threshold"]
    assert stall["subject"].tolist() == ["MRL-AC d = 2"]
    assert stall["value"].tolist() == pytest.approx([2 / 3])
    assert "in 20/30 splits" in stall["text"].iloc[0]
    assert (
        len(
            cascade_headlines(best, stalled, min_share=0.05).query(
                "headline == 'stalled_threshold'"
            )
        )
        == 2
    )


def _points() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": ["MRL-AC"] * 3 + ["MRL-AC + flip"] * 2 + ["FF"] * 4,
            "label": "",
            "expected_size": [10, 20, 40, 5, 300, 64, 128, 256, 512],
            "accuracy": [0.5, 0.6, 0.7, 0.5, 0.55, 0.55, 0.6, 0.75, 0.58],
            "accuracy_std": np.nan,
        }
    )


def test_reduction_headlines_are_true_both_ways():
    points = _points()
    reductions = size_reductions(points, ["MRL-AC", "MRL-AC + flip", "MRL-AC"], "FF")
    assert reductions["curve"].tolist() == ["MRL-AC"] * 4 + ["MRL-AC + flip"] * 4
    best = pd.DataFrame({"model": ["MRL-AC", "MRL-AC + flip"], "accuracy_mean": [0.7, 0.55]})
    h = reduction_headlines(reductions, best)
    # MRL-AC: FF-128 (0.60) at 20 dims, 6.4× (FF-512 is dominated by FF-256's 0.75).
    assert _value(h, "size_reduction", "MRL-AC") == pytest.approx(6.4)
    assert _text(h, "size_reduction", "MRL-AC") == (
        "MRL-AC is as accurate as FF-128 (60.00%) at an expected size of 20.0 dims: 6.4× smaller"
    )
    # The flip cascade reaches FF-64 (0.55) only at 300 dims: it needs 4.7× the size.
    assert _value(h, "size_reduction", "MRL-AC + flip") == pytest.approx(64 / 300)
    assert _text(h, "size_reduction", "MRL-AC + flip").endswith(": needs 4.7× the size")
    assert "smaller" not in _text(h, "size_reduction", "MRL-AC + flip")
    # Best cap 0.70 vs FF-512's 0.58.
    assert _value(h, "best_cap_vs_largest_baseline") == pytest.approx(0.12)
    assert _text(h, "best_cap_vs_largest_baseline") == (
        "MRL-AC's best cap is +12.00 points vs FF-512 (58.00%)"
    )
    never = size_reduction(
        points.assign(accuracy=points.accuracy.where(points.method == "FF", 0.1)), "MRL-AC", "FF"
    )
    h = reduction_headlines(never, best)
    assert np.isnan(_value(h, "size_reduction", "MRL-AC"))
    assert _text(h, "size_reduction") == "MRL-AC reaches the accuracy of no FF model"


def test_router_headlines_compare_with_the_cascade():
    oracle = pd.Series(
        {
            "model": "MRL",
            "best_accuracy": 0.8,
            "best_size": 16,
            "oracle_accuracy": 0.9,
            "oracle_gap": 0.1,
        }
    )
    cascade_best = pd.Series({"model": "MRL-AC", "accuracy_mean": 0.81, "expected_size_mean": 3.0})
    router = pd.DataFrame(
        {
            "model": "router",
            "cost_weight": [0.0, 0.1],
            "accuracy_mean": [0.79, 0.75],
            "expected_size_mean": [6.0, 2.0],
        }
    )
    points = pd.DataFrame(
        {
            "method": ["MRL-AC", "MRL-AC", "router", "router"],
            "label": "",
            "expected_size": [2.0, 3.0, 2.0, 6.0],
            "accuracy": [0.75, 0.78, 0.75, 0.79],
            "accuracy_std": np.nan,
        }
    )
    match = size_reduction(points, "router", "MRL-AC")
    h = router_headlines(oracle, cascade_best, router, match)
    assert _value(h, "best_single_accuracy") == 0.8
    assert _value(h, "oracle_accuracy") == 0.9
    assert _value(h, "cascade_vs_best_single") == pytest.approx(0.01)
    assert _value(h, "router_vs_best_single") == pytest.approx(-0.01)
    # The cascade's 0.78 at 3 dims: the router first gets there at 6 dims.
    assert _value(h, "router_size_for_cascade_accuracy") == pytest.approx(0.5)
    assert _text(h, "router_size_for_cascade_accuracy") == (
        "To match the cascade's 78.00% (at 3.0 dims) the router uses 6.0 dims: needs 2.0× the size"
    )
    assert _text(h, "router_vs_best_single") == (
        "router at its best: 79.00% at an expected size of 6.0 dims, -1.00 points vs the best "
        "single size"
    )
    never = size_reduction(points.assign(accuracy=[0.9, 0.95, 0.1, 0.2]), "router", "MRL-AC")
    h = router_headlines(oracle, cascade_best, router, never)
    assert np.isnan(_value(h, "router_size_for_cascade_accuracy"))
