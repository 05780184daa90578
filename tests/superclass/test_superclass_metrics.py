"""Superclass and per-class analyses on tiny hand-made hierarchies and predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.data.hierarchy import SuperclassMap
from mrl_analysis.superclass.metrics import (
    paired_by_size,
    per_superclass_accuracy,
    superclass_accuracy,
    superclass_members,
)
from mrl_analysis.superclass.per_class import (
    TRENDS,
    at_sizes,
    classify_trends,
    per_class_accuracy,
    relative_accuracy_outliers,
    trend_counts,
)
from mrl_analysis.superclass.plots import superclass_accuracy_figure

CLASS_IDS = ["cat", "dog", "car", "bus", "apple"]
HIERARCHY = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
NESTING = [4, 8]
LABELS = np.array([0, 1, 2, 3, 4, 0])
# Size 4: rows hand-made so that the argmax restricted to the true superclass is known.
SCORES = np.array(
    [
        [
            [1, 3, 0, 0, 0],  # cat -> dog: same superclass; restricted: dog (wrong)
            [0, 3, 0, 0, 0],  # dog -> dog
            [0, 0, 1, 3, 0],  # car -> bus: same superclass; restricted: bus (wrong)
            [0, 0, 3, 1, 0],  # bus -> car: same superclass; restricted: car (wrong)
            [3, 0, 0, 0, 1],  # apple -> cat: leaves "other"; restricted: apple (right)
            [2, 0, 3, 0, 0],  # cat -> car: leaves animal; restricted: cat (right)
        ],
        [
            [3, 0, 0, 0, 0],
            [0, 3, 0, 0, 0],
            [0, 0, 3, 0, 0],
            [0, 0, 0, 3, 0],
            [0, 0, 0, 0, 3],
            [1, 0, 0, 3, 0],  # cat -> bus; restricted: cat (right)
        ],
    ],
    dtype=np.float32,
)


@pytest.fixture
def smap():
    return SuperclassMap.from_hierarchy(HIERARCHY, CLASS_IDS, reject="other")


def test_map_with_reject_pools_unmapped_classes(smap):
    assert smap.names == ["animal", "vehicle", "other"]
    assert smap.index.tolist() == [0, 0, 1, 1, 2]
    assert smap.members("vehicle").tolist() == [2, 3]


def test_map_keeps_only_chosen_superclasses_in_order():
    m = SuperclassMap.from_hierarchy(
        HIERARCHY, CLASS_IDS, superclasses=["vehicle"], reject="reject"
    )
    assert m.names == ["vehicle", "reject"]
    assert m.index.tolist() == [1, 1, 0, 0, 1]


def test_map_flags_a_pooled_group_already_in_the_hierarchy():
    pooled = {**HIERARCHY, "apple": "other"}  # as the datasets pool ImageNet's leftovers
    m = SuperclassMap.from_hierarchy(pooled, CLASS_IDS, reject="other")
    assert m.names == ["animal", "vehicle", "other"] and m.reject == "other"
    assert m.index.tolist() == [0, 0, 1, 1, 2]
    plain = SuperclassMap.from_hierarchy(pooled, CLASS_IDS)
    assert plain.names == ["animal", "other", "vehicle"] and plain.reject is None


def test_map_reads_a_user_json(tmp_path):
    path = tmp_path / "hierarchy.json"
    path.write_text(json.dumps({**HIERARCHY, "apple": "food"}))
    m = SuperclassMap.from_hierarchy(path, CLASS_IDS)
    assert m.names == ["animal", "food", "vehicle"]
    assert m.index.tolist() == [0, 0, 2, 2, 1]


def test_map_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="reject="):
        SuperclassMap.from_hierarchy(HIERARCHY, CLASS_IDS)  # apple has no superclass
    with pytest.raises(ValueError, match="do not appear"):
        SuperclassMap.from_hierarchy(HIERARCHY, CLASS_IDS, superclasses=["plant"], reject="other")
    with pytest.raises(ValueError, match="also listed"):
        SuperclassMap.from_hierarchy(HIERARCHY, CLASS_IDS, superclasses=["animal"], reject="animal")
    with pytest.raises(FileNotFoundError):
        SuperclassMap.from_hierarchy(tmp_path / "missing.json", CLASS_IDS)


def test_superclass_accuracy_matches_hand_count(smap):
    t = superclass_accuracy(SCORES, LABELS, NESTING, smap)
    assert t["truncate_dim"].tolist() == NESTING
    np.testing.assert_allclose(t["fine_accuracy"], [1 / 6, 5 / 6])
    np.testing.assert_allclose(t["superclass_accuracy"], [4 / 6, 5 / 6])
    assert t["n_fine_errors"].tolist() == [5, 1]
    # Size 4 errors: cat->dog, car->bus, bus->car stay inside; apple->cat, cat->car leave.
    np.testing.assert_allclose(t["within_superclass_error_share"], [3 / 5, 0.0])


def test_per_superclass_accuracy_matches_hand_count(smap):
    t = per_superclass_accuracy(SCORES, LABELS, NESTING, smap).set_index(
        ["truncate_dim", "superclass"]
    )
    expected = {
        # (size, superclass): n, superclass acc, within-superclass acc, fine acc, error share
        (4, "animal"): (3, 2 / 3, 2 / 3, 1 / 3, 1 / 2),
        (4, "vehicle"): (2, 1.0, 0.0, 0.0, 1.0),
        (4, "other"): (1, 0.0, 1.0, 0.0, 0.0),
        (8, "animal"): (3, 2 / 3, 1.0, 2 / 3, 0.0),
        (8, "vehicle"): (2, 1.0, 1.0, 1.0, np.nan),
        (8, "other"): (1, 1.0, 1.0, 1.0, np.nan),
    }
    cols = [
        "n_samples",
        "superclass_accuracy",
        "within_superclass_accuracy",
        "fine_accuracy",
        "within_superclass_error_share",
    ]
    for key, values in expected.items():
        np.testing.assert_allclose(t.loc[key, cols].to_numpy(float), values, err_msg=str(key))


def test_superclass_inputs_are_checked(smap):
    with pytest.raises(ValueError, match="covers 5 classes"):
        superclass_accuracy(SCORES[:, :, :4], np.array([0, 1, 2, 3, 0, 0]), NESTING, smap)
    with pytest.raises(ValueError, match="nesting has 3 sizes"):
        superclass_accuracy(SCORES, LABELS, [4, 8, 16], smap)
    with pytest.raises(ValueError, match="pass scores\\[None\\]"):
        superclass_accuracy(SCORES[0], LABELS, [4], smap)


def test_per_class_accuracy_counts_and_relative_accuracy():
    labels = np.array([0, 0, 1, 1, 2])
    # Predicted classes per size; class 2's only sample is right at size 2 only.
    preds = np.array([[0, 1, 1, 0, 2], [0, 0, 1, 1, 0]])
    scores = np.eye(4, dtype=np.float32)[preds]  # 4 classes, class 3 has no samples
    t = per_class_accuracy(scores, labels, [2, 4], class_names=["a", "b", "c", "d"])
    assert sorted(t["class_name"].unique()) == ["a", "b", "c"]
    t = t.set_index(["truncate_dim", "class_name"])
    assert t.loc[(2, "a"), "n_correct"] == 1 and t.loc[(4, "a"), "n_correct"] == 2
    assert t.loc[(2, "c"), "accuracy"] == 1.0 and t.loc[(4, "c"), "accuracy"] == 0.0
    assert t.loc[(2, "a"), "relative_accuracy"] == pytest.approx(-0.5)
    assert t.loc[(2, "c"), "relative_accuracy"] == pytest.approx(1.0)
    assert (t.xs(4, level="truncate_dim")["relative_accuracy"] == 0).all()


def _count_table(series: dict[str, list[int]], model: str = "MRL") -> pd.DataFrame:
    rows = [
        {"model": model, "truncate_dim": 2**j, "class_index": i, "class_name": name, "n_correct": c}
        for i, (name, counts) in enumerate(series.items())
        for j, c in enumerate(counts)
    ]
    return pd.DataFrame(rows)


def test_trend_categories_follow_the_documented_rules():
    series = {
        "up": [1, 2, 3, 3],
        "dip one": [1, 3, 2, 2],
        "dip two after plateau": [1, 3, 3, 1],
        "dip too deep": [1, 5, 2, 2],
        "v shape": [3, 1, 2, 4],
        "flat": [2, 2, 2, 2],
        "zigzag": [3, 1, 4, 2],
        "noisy up": [2, 3, 2, 4],
    }
    got = classify_trends(_count_table(series)).set_index("class_name")["trend"]
    assert got.to_dict() == {
        "up": "monotonic increase",
        "dip one": "increase then dip",
        "dip two after plateau": "increase then dip",
        "dip too deep": "no clear trend",
        "v shape": "decline then increase",
        "flat": "no clear trend",
        "zigzag": "no clear trend",
        "noisy up": "no clear trend",
    }
    loose = classify_trends(_count_table(series), tolerance=1).set_index("class_name")["trend"]
    assert loose["noisy up"] == "monotonic increase"


def test_trend_thresholds_as_shares_of_each_class():
    # The same curve shape at 50 and at 1000 samples: 1% tolerance and 4% dip are 0 / 2
    # samples for the small class and 10 / 40 for the large one.
    table = _count_table({"small": [10, 12, 12, 11], "large": [200, 240, 235, 220]})
    table["n_samples"] = table["class_name"].map({"small": 50, "large": 1000})
    got = classify_trends(table, tolerance=0.01, dip=0.04).set_index("class_name")["trend"]
    assert got.to_dict() == {"small": "increase then dip", "large": "increase then dip"}
    counts = classify_trends(table).set_index("class_name")["trend"]
    assert counts["large"] == "no clear trend"  # a 20-sample dip is too deep in samples
    with pytest.raises(ValueError, match="no n_samples column"):
        classify_trends(table.drop(columns="n_samples"), dip=0.04)
    with pytest.raises(ValueError, match="whole count"):
        classify_trends(table, dip=2.5)


def test_trend_counts_include_every_category_per_model():
    table = pd.concat(
        [_count_table({"a": [1, 2], "b": [2, 1]}), _count_table({"a": [2, 2]}, model="FF")]
    )
    counts = trend_counts(classify_trends(table))
    assert len(counts) == 2 * len(TRENDS)
    got = counts.set_index(["model", "trend"])["n_classes"]
    assert got[("MRL", "monotonic increase")] == 1
    assert got[("MRL", "no clear trend")] == 1
    assert got[("FF", "no clear trend")] == 1 and got[("FF", "increase then dip")] == 0


def outlier_table() -> pd.DataFrame:
    """Per-class accuracy of six classes at sizes 8, 16, 32; class "f" is best at small sizes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 10)
    preds = np.where(rng.random((3, 60)) < [[0.3], [0.6], [0.9]], labels, (labels + 1) % 6)
    preds[:, labels == 5] = [[5], [5], [0]]
    scores = np.eye(6, dtype=np.float32)[preds]
    return per_class_accuracy(scores, labels, [8, 16, 32], class_names=list("abcdef"))


def single_size_table() -> pd.DataFrame:
    """A model with one size (FF-512 alone): no smaller size to compare with."""
    labels = np.repeat(np.arange(3), 4)
    scores = np.eye(3, dtype=np.float32)[labels][None]
    return per_class_accuracy(scores, labels, [512], class_names=list("abc"), model="FF")


def test_relative_accuracy_outliers_gain_most_from_small_sizes():
    t = outlier_table()
    top = relative_accuracy_outliers(t, 1)
    assert top["class_name"].tolist() == ["f"]
    # "f" is right on all 10 samples at 8 and 16 and on none at 32: +100% on average.
    assert top["mean_relative_accuracy"].tolist() == pytest.approx([1.0])
    assert relative_accuracy_outliers(single_size_table(), 2).empty
    with pytest.raises(ValueError, match="one model"):
        relative_accuracy_outliers(pd.concat([t, t.assign(model="FF")]), 1)


def test_superclass_members_lists_classes_per_superclass(smap):
    members = superclass_members(smap, ["Cat", "Dog", "Car", "Bus", "Apple"])
    assert members.to_dict("list") == {
        "superclass": ["animal", "vehicle", "other"],
        "n_classes": [2, 2, 1],
        "classes": ["Cat, Dog", "Car, Bus", "Apple"],
    }
    with pytest.raises(ValueError, match="one name per class"):
        superclass_members(smap, ["Cat"])


def test_paired_by_size_keeps_the_sizes_both_models_have(smap):
    mrl = superclass_accuracy(SCORES, LABELS, NESTING, smap, model="MRL")
    ff = superclass_accuracy(SCORES[1:], LABELS, [8], smap, model="FF")
    pair = paired_by_size(pd.concat([mrl, ff]), "fine_accuracy", "MRL", "FF")
    assert list(pair.columns) == ["truncate_dim", "MRL", "FF", "difference"]
    assert pair["truncate_dim"].tolist() == [8]
    assert pair["difference"].tolist() == pytest.approx([0.0])
    with pytest.raises(ValueError, match="no rows for model 'FF-9'"):
        paired_by_size(mrl, "fine_accuracy", "MRL", "FF-9")


def test_at_sizes_renames_a_model_at_chosen_sizes():
    t = outlier_table()
    part = at_sizes(t, "MRL", [8, 32], "MRL @ FF sizes")
    assert set(part["truncate_dim"]) == {8, 32} and set(part["model"]) == {"MRL @ FF sizes"}
    assert len(part) == 2 * 6
    with pytest.raises(ValueError, match=r"no rows at sizes \[16\]"):
        at_sizes(t[t.truncate_dim != 16], "MRL", [8, 16], "x")


def test_rates_carry_bootstrap_intervals_next_to_them():
    rng = np.random.default_rng(4)
    smap = SuperclassMap(index=np.array([0, 0, 1, 1]), names=["a", "b"])
    labels = rng.integers(0, 4, 600)
    scores = rng.normal(size=(2, 600, 4)).astype(np.float32)
    scores[1, np.arange(600), labels] += 1.5
    overall = superclass_accuracy(scores, labels, [2, 8], smap)
    rates = ["fine_accuracy", "superclass_accuracy", "within_superclass_error_share"]
    columns = list(overall.columns)
    for rate in rates:
        at = columns.index(rate)
        assert columns[at + 1 : at + 3] == [f"{rate}_ci_low", f"{rate}_ci_high"]
        assert (overall[f"{rate}_ci_low"] < overall[rate]).all()
        assert (overall[rate] < overall[f"{rate}_ci_high"]).all()
    per = per_superclass_accuracy(scores, labels, [2, 8], smap)
    for rate in ["superclass_accuracy", "within_superclass_accuracy", "fine_accuracy"]:
        assert (per[f"{rate}_ci_low"] <= per[rate]).all()
        assert (per[rate] <= per[f"{rate}_ci_high"]).all()
    # A superclass holds about half the samples: its interval is wider than the overall one.
    width = per["fine_accuracy_ci_high"] - per["fine_accuracy_ci_low"]
    overall_width = overall["fine_accuracy_ci_high"] - overall["fine_accuracy_ci_low"]
    assert width.min() > overall_width.max()
    fig = superclass_accuracy_figure(overall)
    np.testing.assert_allclose(
        fig.data[0].error_y.array,
        overall["superclass_accuracy_ci_high"] - overall["superclass_accuracy"],
    )
