"""Headlines of notebook 05 on small hand-made tables: every stated number checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.fewshot.headlines import (
    FEWSHOT_COLUMNS,
    fluid_headlines,
    novel_class_headlines,
    own_class_headlines,
    saturation_headlines,
    stream_headlines,
)
from mrl_analysis.fewshot.stream import FluidStream


def _fewshot(cells: dict[tuple[str, int, int, int], tuple[float, float]]) -> pd.DataFrame:
    """A few-shot table from ``{(model, shots, ways, size): (accuracy, half-width)}``."""
    return pd.DataFrame(
        [
            {"model": model, "truncate_dim": m, "shots": n, "ways": k, "accuracy": a}
            | {"ci_low": a - c, "ci_high": a + c}
            for (model, n, k, m), (a, c) in cells.items()
        ]
    )


def _row(table: pd.DataFrame, **where) -> pd.Series:
    mask = np.logical_and.reduce([table[key] == value for key, value in where.items()])
    assert mask.sum() == 1, f"expected one row for {where}, got {mask.sum()}"
    return table[mask].iloc[0]


def test_own_class_headlines():
    cells = {}
    for n, base in ((1, 0.40), (5, 0.60)):
        for k, drop in ((5, 0.0), (10, 0.1)):
            for m, gain in ((2, 0.0), (8, 0.2), (64, 0.3)):
                cells[("MRL", n, k, m)] = (base + gain - drop, 0.01)
    cells[("FF-2", 1, 5, 2)] = (0.35, 0.02)
    cells[("FF-64", 1, 5, 64)] = (0.75, 0.02)
    cells[("FF-64", 5, 5, 64)] = (0.9, 0.02)
    kinds = {"MRL": "mrl", "FF-2": "ff", "FF-64": "ff", "MRL-E": "mrl-e"}
    got = own_class_headlines(_fewshot(cells), kinds)
    assert list(got.columns) == FEWSHOT_COLUMNS
    acc = got[got.headline == "accuracy"]
    # The fewest and the most shots, at the smallest way count, smallest and largest size.
    assert len(acc) == 4 and set(acc["ways"]) == {5}
    assert _row(acc, shots=1, truncate_dim=2)["value"] == pytest.approx(0.40)
    assert _row(acc, shots=5, truncate_dim=64)["value"] == pytest.approx(0.90)
    assert (
        _row(acc, shots=1, truncate_dim=64)["text"]
        == "MRL, 1-shot 5-way at m = 64: 70.0% [69.0, 71.0]"
    )
    vs = got[got.headline == "vs_ff"].set_index("baseline")
    assert vs.loc["FF-2", "value"] == pytest.approx(0.05)
    assert vs.loc["FF-64", "value"] == pytest.approx(-0.05)
    assert vs.loc["FF-64", "baseline_accuracy"] == pytest.approx(0.75)
    assert vs.loc["FF-2", "truncate_dim"] == 2 and vs.loc["FF-2", "shots"] == 1
    assert vs.loc["FF-64", "text"] == (
        "1-shot 5-way at m = 64: MRL 70.0% [69.0, 71.0] vs FF-64 75.0% [73.0, 77.0] (-5.0 points)"
    )
    assert own_class_headlines(_fewshot(cells), {"FF-2": "ff"}).empty


def test_novel_class_headlines():
    sub, full = "MRL (6 classes)", "MRL (all 10 classes)"
    cells = {}
    for n in (1, 9):
        for m, (a, b) in {4: (0.50, 0.60), 64: (0.70, 0.72)}.items():
            cells[(sub, n, 2, m)] = (a + 0.01 * n, 0.02)
            cells[(full, n, 2, m)] = (b + 0.01 * n, 0.02)
    cells[("FF-512 (6 classes)", 1, 2, 512)] = (0.66, 0.03)
    cells[("FF-512 (6 classes)", 9, 2, 512)] = (0.80, 0.03)
    twins = {sub: full, "FF-512 (6 classes)": None}
    got = novel_class_headlines(_fewshot(cells), twins)
    pair = got[got.headline == "novel_vs_all_classes"]
    assert set(pair["shots"]) == {1, 9} and set(pair["truncate_dim"]) == {64}
    one = _row(pair, shots=1)
    assert (one["accuracy"], one["baseline_accuracy"]) == pytest.approx((0.71, 0.73))
    assert one["value"] == pytest.approx(-0.02)
    assert one["text"] == (
        "1-shot 2-way on novel classes at m = 64: MRL (6 classes) 71.0% [69.0, 73.0] vs "
        "MRL (all 10 classes) 73.0% [71.0, 75.0] (-2.0 points)"
    )
    gaps = got[got.headline == "gap_per_size"].set_index("truncate_dim")["value"]
    assert gaps.to_dict() == pytest.approx({4: -0.10, 64: -0.02})
    lone = got[got.model == "FF-512 (6 classes)"]
    assert lone["headline"].tolist() == ["accuracy", "accuracy"]
    assert lone["value"].tolist() == pytest.approx([0.66, 0.80])


def test_saturation_headlines():
    sat = pd.DataFrame(
        {
            "model": ["MRL"] * 3 + ["FF"] * 2,
            "shots": [1, 5, 9, 9, 1],
            "ways": [5] * 5,
            "saturation_dim": [8, 32, 64, 512, 16],
            "largest_dim": [512] * 5,
        }
    )
    got = saturation_headlines(sat).set_index("model")
    assert got.loc["MRL", ["fewest_shots", "value", "most_shots", "most_shots_dim"]].tolist() == [
        1,
        8,
        9,
        64,
    ]
    assert got.loc["FF", "value"] == 16 and got.loc["FF", "most_shots_dim"] == 512
    assert (
        got.loc["MRL", "text"] == "MRL, 5-way, saturates at m = 1-shot: 8, 5-shot: 32, 9-shot: 64"
    )


def test_fluid_headlines():
    rows = []
    values = {
        2: {"pretrain-head": 0.5, "novel-tail": 0.1, "overall": 0.4},
        8: {"pretrain-head": 0.9, "novel-tail": 0.3, "overall": 0.7},
        64: {"pretrain-head": 0.92, "novel-tail": np.nan, "overall": 0.7},
    }
    for m, cats in values.items():
        # A category without classes (no novel head class here) is NaN at every size.
        for category, a in {**cats, "novel-head": np.nan}.items():
            rows.append({"model": "MRL", "truncate_dim": m, "category": category, "accuracy": a})
    rows.append({"model": "FF-64", "truncate_dim": 64, "category": "overall", "accuracy": 0.6})
    got = fluid_headlines(pd.DataFrame(rows))
    mrl = got[got.model == "MRL"].set_index(["headline", "category"])
    assert mrl.loc[("at_largest", "pretrain-head"), "value"] == pytest.approx(0.92)
    assert np.isnan(mrl.loc[("at_largest", "novel-tail"), "value"])
    assert mrl.loc[("at_largest", "novel-tail"), "text"] == "MRL at m = 64: novel-tail n/a"
    assert mrl.loc[("at_largest", "novel-head"), "text"] == "MRL at m = 64: novel-head n/a"
    assert mrl.loc[("overall_at_smallest", "overall"), "value"] == pytest.approx(0.4)
    assert mrl.loc[("novel_tail_at_smallest", "novel-tail"), "truncate_dim"] == 2
    best = mrl.loc[("best_overall", "overall")]
    assert best["truncate_dim"] == 8, "a tie goes to the smaller size"
    assert best["text"] == "MRL: best overall 70.0% at m = 8"
    ff = got[got.model == "FF-64"]
    assert ff["headline"].tolist() == ["at_largest"], "one size: nothing to compare"
    # Categories in the order of fluid.CATEGORIES.
    assert got[(got.model == "MRL") & (got.headline == "at_largest")]["category"].tolist() == [
        "pretrain-head",
        "novel-head",
        "novel-tail",
        "overall",
    ]


def test_stream_headlines():
    stream = FluidStream(
        np.arange(6),
        np.array([0, 1, 0, 2, 0, 1]),
        pretrain_classes=[0, 1],
        novel_classes=[2],
        distribution="zipf",
        alpha=1.5,
    )
    got = stream_headlines(stream, head_threshold=2.0, init_samples=120).set_index("headline")
    assert got["value"].tolist() == [6, 2.0, 120]
    assert got.loc["stream_samples", "text"] == "6 stream samples (zipf, alpha = 1.5)"
    assert got.loc["head_threshold", "text"] == "head = more than 2 samples"
    assert got.loc["init_samples", "text"] == "pretrain means start from 120 train samples"
