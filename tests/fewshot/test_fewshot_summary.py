"""Derived few-shot / FLUID tables on hand-made inputs: saturation, CI text, class splits."""

from __future__ import annotations

import pandas as pd
import pytest

from mrl_analysis.fewshot.summary import (
    accuracy_ci_table,
    category_counts,
    category_table,
    class_split_table,
    saturation_table,
)

SIZES = [8, 16, 32, 64, 2048]


def _paper_like() -> pd.DataFrame:
    """Accuracies shaped like the paper's Table 15 (fractions), plus single-size FF models."""
    acc = {1: [0.354, 0.405, 0.414, 0.413, 0.412], 9: [0.517, 0.594, 0.604, 0.609, 0.613]}
    rows = [
        {"model": "MRL", "truncate_dim": m, "shots": n, "ways": 1000, "accuracy": a}
        for n, values in acc.items()
        for m, a in zip(SIZES, values, strict=True)
    ]
    # FF-k models, one size each, form one "FF" line.
    rows += [
        {"model": f"FF-{m}", "truncate_dim": m, "shots": 1, "ways": 1000, "accuracy": a}
        for m, a in zip(SIZES, [0.30, 0.39, 0.401, 0.402, 0.403], strict=True)
    ]
    return pd.DataFrame(rows)


def test_saturation_table_from_handmade_accuracies():
    table = _paper_like()
    sat = saturation_table(table, tolerance=0.005)
    assert list(sat.columns) == [
        "model",
        "shots",
        "ways",
        "saturation_dim",
        "accuracy",
        "largest_dim",
        "largest_accuracy",
    ]
    got = {(r.model, r.shots): r.saturation_dim for r in sat.itertuples()}
    assert got == {("MRL", 1): 32, ("MRL", 9): 64, ("FF", 1): 32}
    mrl1 = sat[(sat.model == "MRL") & (sat.shots == 1)].iloc[0]
    assert mrl1["accuracy"] == pytest.approx(0.414)
    assert mrl1["largest_accuracy"] == pytest.approx(0.412)
    assert (sat["largest_dim"] == 2048).all()
    strict = saturation_table(table, tolerance=0.0)
    assert set(strict.loc[strict["model"] == "MRL", "saturation_dim"]) == {32, 2048}
    # One point (0.01) reaches back to 16 dims for 1-shot (0.405 >= 0.412 - 0.01).
    loose = saturation_table(table, tolerance=0.01)
    assert loose.set_index(["model", "shots"]).loc[("MRL", 1), "saturation_dim"] == 16


def test_saturation_table_drops_single_size_lines_and_checks_input():
    table = _paper_like()
    lone = pd.DataFrame(
        [{"model": "FF-4", "truncate_dim": 4, "shots": 1, "ways": 1000, "accuracy": 0.3}]
    )
    sat = saturation_table(pd.concat([table[table.model == "MRL"], lone]), tolerance=0.005)
    assert set(sat["model"]) == {"MRL"}, "a line with one size saturates trivially"
    with pytest.raises(ValueError, match="fraction"):
        saturation_table(table, tolerance=1.0 + 1e-9)
    with pytest.raises(ValueError, match="fraction"):
        saturation_table(table, tolerance=-0.01)
    with pytest.raises(ValueError, match="lacks columns"):
        saturation_table(pd.DataFrame({"model": ["a"]}))


def test_accuracy_ci_table_renders_percent_in_model_order():
    rows = [
        {"model": model, "truncate_dim": m, "shots": n, "ways": k, "accuracy": a}
        | {"ci_low": a - 0.0125, "ci_high": a + 0.025}
        for model, a in (("MRL", 0.5), ("FF-8", 0.25))
        for k in (5, 10)
        for n in (1, 5)
        for m in (2, 8)
    ]
    grid = accuracy_ci_table(pd.DataFrame(rows))
    assert list(grid.columns) == [1, 5]
    assert grid.index.names == ["ways", "model", "truncate_dim"]
    assert list(grid.loc[5].index.get_level_values("model").unique()) == ["MRL", "FF-8"]
    assert grid.loc[(10, "FF-8", 8), 5] == "25.0 [23.8, 27.5]"
    assert grid.loc[(5, "MRL", 2), 1] == "50.0 [48.8, 52.5]"


def test_class_split_and_category_counts():
    split = class_split_table([0, 2], [1, 3, 4], ["cat", "dog", "car", "bus", "owl"])
    assert split.to_dict("records") == [
        {"origin": "pretrain", "classes": 2, "names": "cat, car"},
        {"origin": "novel", "classes": 3, "names": "dog, bus, owl"},
    ]
    classes = pd.DataFrame(
        {
            "class": [0, 1, 2, 3],
            "count": [40, 3, 25, 0],
            "category": ["pretrain-head", "novel-tail", "pretrain-head", "novel-absent"],
        }
    )
    counts = category_counts(classes)
    assert counts.loc["pretrain-head"].tolist() == [2, 65]
    assert counts.loc["novel-tail"].tolist() == [1, 3]
    assert counts.loc["novel-absent"].tolist() == [1, 0]


def test_category_table_orders_models_and_categories():
    rows = [
        {"model": model, "truncate_dim": m, "category": c, "accuracy": a}
        for model, base in (("MRL", 0.5), ("FF-8", 0.25))
        for m in (8, 2)
        for c, a in (("overall", base), ("novel-tail", base / 2), ("pretrain-head", base + m / 100))
    ]
    grid = category_table(pd.DataFrame(rows))
    assert list(grid.columns) == ["pretrain-head", "novel-tail", "overall"]
    assert list(grid.index) == [("MRL", 2), ("MRL", 8), ("FF-8", 2), ("FF-8", 8)]
    assert grid.loc[("FF-8", 8), "pretrain-head"] == pytest.approx(0.33)
    assert grid.loc[("MRL", 2), "novel-tail"] == pytest.approx(0.25)
