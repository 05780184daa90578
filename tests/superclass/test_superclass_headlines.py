"""Headlines of the superclass study, checked number by number on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.superclass.headlines import (
    outlier_headlines,
    paired_headlines,
    size_headlines,
    trend_headlines,
    within_superclass_headlines,
)

OVERALL = pd.DataFrame(
    {
        "model": ["MRL"] * 4 + ["FF"] * 2,
        "truncate_dim": [8, 1, 2, 4, 2, 8],
        "fine_accuracy": [0.80, 0.30, 0.60, 0.795, 0.50, 0.82],
        "superclass_accuracy": [0.95, 0.70, 0.945, 0.95, 0.90, 0.96],
        "within_superclass_error_share": [0.40, 0.55, np.nan, 0.35, 0.5, 0.5],
    }
)


def test_size_headlines_state_both_ends_and_saturation():
    h = size_headlines(OVERALL, "MRL", "superclass_accuracy", tolerance=0.01).set_index("headline")
    assert h.loc["at_smallest", ["truncate_dim", "value"]].tolist() == [1, 0.70]
    assert h.loc["at_largest", ["truncate_dim", "value"]].tolist() == [8, 0.95]
    assert h.loc["lowest", "truncate_dim"] == 1 and h.loc["highest", "truncate_dim"] == 4
    # Best 95.0% first reached at 4 dims; 94.5% at 2 dims is within one point of it.
    within = h.loc["smallest_within_tolerance"]
    assert (within.truncate_dim, within.value) == (2, 0.945)
    assert (within.reference_dim, within.reference_value) == (4, 0.95)
    assert within.text == (
        "MRL: superclass accuracy is within 1 point of its best (95.0% at 4 dims) from "
        "2 dims on (94.5%)"
    )
    assert h.loc["at_smallest", "text"] == "MRL at 1 dim: superclass accuracy 70.0%"
    fine = size_headlines(OVERALL, "MRL", "fine_accuracy", tolerance=0.0).set_index("headline")
    assert fine.loc["smallest_within_tolerance", "truncate_dim"] == 8
    loose = size_headlines(OVERALL, "MRL", "fine_accuracy", tolerance=0.005)
    assert loose.set_index("headline").loc["smallest_within_tolerance", "truncate_dim"] == 4


def test_size_headlines_skip_missing_values():
    h = size_headlines(OVERALL, "MRL", "within_superclass_error_share").set_index("headline")
    assert "smallest_within_tolerance" not in h.index  # no tolerance, no saturation row
    assert h.loc["lowest", ["truncate_dim", "value"]].tolist() == [4, 0.35]
    assert h.loc["highest", ["truncate_dim", "value"]].tolist() == [1, 0.55]
    assert h.loc["lowest", "text"] == (
        "MRL: lowest share of errors inside the true superclass 35.0% at 4 dims"
    )
    with pytest.raises(ValueError, match="no rows for model 'X'"):
        size_headlines(OVERALL, "X", "fine_accuracy")
    with pytest.raises(ValueError, match="fraction"):
        size_headlines(OVERALL, "MRL", "fine_accuracy", tolerance=2.0)


def test_paired_headlines_subtract_the_baseline_at_shared_sizes():
    h = paired_headlines(OVERALL, "MRL", "FF")
    assert h[["truncate_dim", "metric"]].values.tolist() == [
        [2, "superclass_accuracy"],
        [2, "fine_accuracy"],
        [8, "superclass_accuracy"],
        [8, "fine_accuracy"],
    ]
    np.testing.assert_allclose(h["value"], [0.045, 0.10, -0.01, -0.02])
    assert h.iloc[3]["text"] == "d = 8: fine accuracy 80.0% (MRL) vs 82.0% (FF): -2.0 points"
    assert h.iloc[0]["text"].endswith("+4.5 points")


def test_within_superclass_headlines_sort_by_gain_and_name_single_classes():
    per_super = pd.DataFrame(
        {
            "model": "MRL",
            "truncate_dim": [1, 1, 1, 16, 16, 16],
            "superclass": ["bags", "footwear", "tops", "bags", "footwear", "tops"],
            "within_superclass_accuracy": [1.0, 0.5, 0.6, 1.0, 0.9, 0.7],
        }
    )
    members = pd.DataFrame(
        {"superclass": ["bags", "footwear", "tops"], "n_classes": [1, 3, 4], "classes": ""}
    )
    h = within_superclass_headlines(per_super, members)
    gains = h[h.headline == "within_superclass_gain"]
    assert gains["superclass"].tolist() == ["bags", "tops", "footwear"]
    np.testing.assert_allclose(gains["value"], [0.0, 0.1, 0.4])
    assert gains.iloc[2]["text"] == (
        "MRL, within footwear: 50.0% at 1 dim → 90.0% at 16 dims (+40.0 points)"
    )
    note = h[h.headline == "single_class"].iloc[0]
    assert note.value == 1 and note.text == "(always 100%: bags holds a single class)"
    several = within_superclass_headlines(per_super, members.assign(n_classes=2))
    assert "single_class" not in set(several["headline"])


def test_trend_headlines_name_the_most_common_trend():
    counts = pd.DataFrame(
        {
            "model": ["MRL"] * 4 + ["FF"] * 4,
            "trend": [
                "monotonic increase",
                "increase then dip",
                "decline then increase",
                "no clear trend",
            ]
            * 2,
            "n_classes": [6, 2, 0, 2, 3, 0, 0, 3],
        }
    )
    h = trend_headlines(counts).set_index("model")
    assert h.loc["MRL", ["trend", "value", "n_classes_total"]].tolist() == [
        "monotonic increase",
        6,
        10,
    ]
    assert h.loc["MRL", "text"] == "MRL: 6 of 10 classes follow 'monotonic increase'"
    # A tie goes to the earlier trend of TRENDS.
    assert h.loc["FF", "trend"] == "monotonic increase"


def test_outlier_headlines_average_over_the_smaller_sizes():
    per_class = pd.DataFrame(
        {
            "model": "MRL",
            "truncate_dim": [2, 4, 8] * 2,
            "class_index": [0, 0, 0, 1, 1, 1],
            "class_name": ["shirt"] * 3 + ["sandal"] * 3,
            "relative_accuracy": [-0.2, -0.1, 0.0, 0.03, 0.01, 0.0],
            "reference_size": 8,
        }
    )
    h = outlier_headlines(per_class, 1)
    assert h["class_name"].tolist() == ["sandal"]
    assert h["value"].tolist() == pytest.approx([0.02])
    assert h.iloc[0]["text"] == "MRL: sandal on average +2.0 points vs MRL-8 over the smaller sizes"
    assert len(outlier_headlines(per_class, 5)) == 2
    assert outlier_headlines(per_class[per_class.truncate_dim == 8], 2).empty
