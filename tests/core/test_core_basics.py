"""The shared basics: input checks, softmax, head kinds and the within-tolerance rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.core.checks import (
    NonFiniteError,
    check_features,
    check_finite,
    check_fraction,
    check_ks,
    check_labels,
    check_nesting,
    check_scores,
    check_sizes,
    check_truncate_dim,
)
from mrl_analysis.core.kinds import check_kind, model_display_name
from mrl_analysis.core.numeric import predictions, softmax
from mrl_analysis.core.sizes import cheapest_within, smallest_size_within


def test_nesting_is_never_reordered_and_sizes_are_integers():
    assert check_nesting([1, 2, 4]) == [1, 2, 4]
    with pytest.raises(ValueError, match="strictly increasing"):
        check_nesting([16, 4, 4])
    with pytest.raises(TypeError, match="integer"):
        check_nesting([4.9, 8])
    with pytest.raises(TypeError, match="integer"):
        check_truncate_dim("8", [4, 8])
    with pytest.raises(TypeError, match="integer"):
        check_truncate_dim(True, [1, 8])
    with pytest.raises(ValueError, match="beyond the feature dimension 8"):
        check_nesting([4, 16], dim=8)
    assert check_sizes([8, 2, 2], dim=8) == [2, 8]
    with pytest.raises(ValueError, match="not a nesting size"):
        check_truncate_dim(3, [2, 4])
    assert check_truncate_dim(3, [2, 4], any_size=True) == 3
    assert check_ks(5) == [5] and check_ks([10, 1, 1], upper=10) == [1, 10]
    with pytest.raises(ValueError, match=r"\[11\] must lie in 1..10"):
        check_ks([1, 11], upper=10)


def test_non_finite_values_are_counted_and_named():
    x = np.ones((4, 3), np.float32)
    x[0, 1], x[2, 2] = np.nan, np.inf
    with pytest.raises(NonFiniteError, match=r"features holds 2 non-finite"):
        check_features(x)
    logits = np.zeros((1, 2, 3), np.float32)
    logits[0, 0, 2] = -np.inf  # a class outside a class subset: allowed
    scores, labels, sizes = check_scores(logits, [0, 1], [4])
    assert sizes == [4] and labels.dtype == np.int64
    logits[0, 1, 0] = np.nan
    with pytest.raises(NonFiniteError, match="scores holds 1 non-finite"):
        check_scores(logits, [0, 1], [4])
    big = np.zeros((5000, 1000), np.float32)
    big[4999, 999] = np.inf  # beyond the first block
    with pytest.raises(NonFiniteError, match="1 non-finite"):
        check_finite(big, "big")


def test_labels_and_fractions():
    with pytest.raises(TypeError, match="integer class indices"):
        check_labels(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"0..2"):
        check_labels([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="one label per sample"):
        check_labels([0, 1], n=3)
    assert check_fraction(0.01, "tolerance") == 0.01
    with pytest.raises(ValueError, match="fraction"):
        check_fraction(1.5, "tolerance")


def test_softmax_and_predictions():
    logits = np.array([[1.0, 2.0, -np.inf], [1000.0, 1000.0, 0.0]])
    p = softmax(logits)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert p[0, 2] == 0 and p[1, 0] == pytest.approx(0.5)
    scores = np.stack([logits, logits[:, ::-1]])
    np.testing.assert_array_equal(predictions(scores), [[1, 0], [1, 1]])


def test_kinds():
    assert model_display_name("ff-64") == "FF" and model_display_name("mrl-e") == "MRL-E"
    assert model_display_name("MyModel") == "MyModel"
    with pytest.raises(ValueError, match="unknown head kind"):
        check_kind("mlp")


def test_cheapest_within_picks_the_cheapest_candidate_as_good_as_each_reference():
    values = [0.5, 0.8, 0.79, 0.9]
    costs = [1, 8, 4, 16]  # deliberately not sorted by cost
    idx = cheapest_within(values, costs, [0.5, 0.79, 0.8, 0.95], tolerance=0.0)
    np.testing.assert_array_equal(idx, [0, 2, 1, -1])
    assert cheapest_within(values, costs, 0.8, tolerance=0.01) == 2


def test_smallest_size_within_per_group():
    table = pd.DataFrame(
        {
            "model": ["A"] * 4 + ["B"] * 4,
            "truncate_dim": [1, 2, 4, 8] * 2,
            "accuracy": [0.5, 0.79, 0.8, 0.8, 0.2, 0.9, 0.5, 0.6],
        }
    )
    out = smallest_size_within(table, by=["model"], tolerance=0.01).set_index("model")
    assert out.loc["A", "smallest_dim"] == 2 and out.loc["A", "reduction"] == 4
    assert out.loc["B", "smallest_dim"] == 2  # as good as the largest size (0.6)
    best = smallest_size_within(table, by=["model"], reference="best").set_index("model")
    assert best.loc["B", "reference_dim"] == 2 and best.loc["B", "smallest_dim"] == 2
    assert best.loc["A", "reference_dim"] == 4 and best.loc["A", "smallest_dim"] == 4


def test_findings_verdicts():
    from mrl_analysis.core.findings import (
        FAILS,
        HOLDS,
        UNMEASURED,
        finding,
        findings_table,
        unmeasured,
        verdict,
    )

    assert verdict(0.01, 0.03, 0.0) == HOLDS
    assert verdict(-0.03, -0.01, 0.0) == FAILS
    assert verdict(-0.01, 0.02, 0.0) == UNMEASURED
    assert verdict(0.0, 0.0, 0.0) == FAILS  # never above the threshold
    assert verdict(0.2, 0.4, 0.5, "below") == HOLDS
    row = finding("a", "MRL beats FF", "MRL − FF", 0.02, -0.01, 0.05)
    assert row["verdict"] == UNMEASURED and "straddles" in row["reason"]
    opposite = finding("d", "cheaper", "size / full size", 1.2, 1.1, 1.3, threshold=1.0,
                       direction="below")  # fmt: skip
    assert opposite["verdict"] == FAILS
    assert "lies above 1" in opposite["reason"] and "show the opposite" in opposite["reason"]
    table = findings_table([unmeasured("b", "claim", "effect", "no FF model"), row])
    assert list(table.finding) == ["a", "b"] and table.verdict.iloc[1] == UNMEASURED
    assert table.reason.iloc[1] == "no FF model"
