"""The findings package: every theme's findings composed into one table, its sentences and
its figure, on hand-made caches (no model, no disk)."""

from __future__ import annotations

import numpy as np
import pytest
from hand_caches import hand_cache

from mrl_analysis.core.findings import COLUMNS, FAILS, HOLDS, UNMEASURED, VERDICTS, finding
from mrl_analysis.core.findings import findings_table as table_of
from mrl_analysis.findings.headlines import finding_lines, verdict_counts
from mrl_analysis.findings.plots import VERDICT_COLORS, findings_figure
from mrl_analysis.findings.study import THEMES, default_model, paper_findings

C, PER_CLASS, D = 6, 40, 16
NESTING = [2, 4, 8, 16]
IDS = [f"c{i}" for i in range(C)]
HIERARCHY = {c: f"group {i // 2}" for i, c in enumerate(IDS)}
FAST = {"n_boot": 100}


def _split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-clustered features whose every prefix separates the classes somewhat."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), PER_CLASS)
    centroids = np.random.default_rng(0).normal(size=(C, D)) * 2
    return centroids[labels] + rng.normal(size=(len(labels), D)), labels


def _logits(features: np.ndarray, sizes: list[int]) -> np.ndarray:
    centroids = np.random.default_rng(0).normal(size=(C, D)) * 2
    return np.stack([features[:, :m] @ centroids[:, :m].T for m in sizes])


def _caches(seed: int) -> dict:
    x, y = _split(seed)
    common = {"class_ids": IDS, "hierarchy": HIERARCHY}
    return {
        "MRL-E": hand_cache("mrl-e", NESTING, _logits(x, NESTING), y, features=x, **common),
        "MRL": hand_cache("mrl", NESTING, _logits(x, NESTING), y, features=x, **common),
        "FF-2": hand_cache("ff", [2], _logits(x, [2]), y, features=x[:, :2], **common),
        "FF-16": hand_cache("ff", [16], _logits(x, [16]), y, features=x, **common),
    }


def test_every_finding_is_stated_once_in_the_standard_format():
    evals, databases = _caches(1), _caches(2)
    table = paper_findings(evals, databases, **FAST)
    assert list(table.columns) == COLUMNS
    assert table["finding"].tolist() == list("abcdefgh")
    assert set(table["verdict"]) <= set(VERDICTS)
    assert table["reason"].str.len().gt(0).all()
    # every theme was asked, and timed
    assert set(table.attrs["seconds"]) == {t.name for t in THEMES}
    assert sorted(k for t in THEMES for k in t.keys) == list("abcdefgh")
    # the model is the first MRL one, though MRL-E comes first, and every theme measured it
    measured = table[table["value"].notna()]
    assert set(measured["finding"]) == set("abcdefgh")
    assert "MRL-E" not in " ".join(table["effect"])
    # one paired bootstrap setting for all: the interval brackets the value
    assert (measured["ci_low"] <= measured["value"] + 1e-12).all()
    assert (measured["value"] <= measured["ci_high"] + 1e-12).all()


def test_missing_inputs_become_unmeasured_rows_that_say_why():
    evals = _caches(1)
    table = paper_findings(evals, None, **FAST).set_index("finding")
    for key in ("b", "f"):  # both search a database split
        assert table.loc[key, "verdict"] == UNMEASURED and np.isnan(table.loc[key, "value"])
    assert "database" in table.loc["b", "reason"] and "database" in table.loc["f", "reason"]
    assert not np.isnan(table.loc["c", "value"])  # the others still are measured

    # no nested model at all: every finding says so, none raises
    ff_only = {n: c for n, c in evals.items() if n.startswith("FF")}
    assert default_model(ff_only) is None
    table = paper_findings(ff_only, _caches(2), **FAST)
    assert (table["verdict"] == UNMEASURED).all() and table["value"].isna().all()
    assert table["reason"].str.contains("MRL").all()


def test_a_theme_refusing_its_inputs_gives_its_message_as_the_reason():
    evals = _caches(1)
    table = paper_findings(evals, _caches(2), model="MRL-E", **FAST).set_index("finding")
    assert "MRL-E" in table.loc["c", "effect"]
    table = paper_findings(evals, _caches(2), model="nope", **FAST).set_index("finding")
    # retrieval and few-shot refuse an unknown model with a ValueError: caught, stated
    for key in ("f", "g"):
        assert table.loc[key, "verdict"] == UNMEASURED
        assert "'nope'" in table.loc[key, "reason"]


def _hand_table() -> object:
    nan = float("nan")
    return table_of(
        [
            finding("a", "MRL ≥ FF", "MRL − FF (fraction)", 0.02, 0.01, 0.03),
            finding(
                "b", "claim b", "ratio of sizes", 0.5, 0.4, 0.6, threshold=0.2, direction="below"
            ),
            finding("c", "claim c", "log2 steps", 0.1, -0.2, 0.4),
            finding("d", "claim d", "x", nan, nan, nan, reason="no FF model here"),
        ]
    )


def test_sentences_state_numbers_or_the_reason():
    table = _hand_table()
    lines = finding_lines(table).set_index("finding")["text"]
    assert lines["a"].startswith(f"(a) MRL ≥ FF: {HOLDS}") and "+0.02 [+0.01, +0.03]" in lines["a"]
    assert "why" not in lines["a"]
    assert f": {FAILS}" in lines["b"] and "why: the whole interval" in lines["b"]
    assert "show the opposite" in lines["b"]
    assert f": {UNMEASURED}" in lines["c"] and "straddles" in lines["c"]
    assert lines["d"].endswith("no FF model here.")
    assert verdict_counts(table) == "1 of 4 findings hold, 1 do not, 2 cannot be measured here"
    with pytest.raises(ValueError, match="not a findings table"):
        finding_lines(table.drop(columns=["reason"]))


def test_figure_one_row_per_finding_colored_by_verdict():
    table = _hand_table()
    fig = findings_figure(table)
    points = {t.x[0]: t for t in fig.data}
    assert sorted(points) == [0.02, 0.1, 0.5]  # the unmeasured one has no point
    assert points[0.02].marker.color == VERDICT_COLORS[HOLDS]
    assert points[0.5].marker.color == VERDICT_COLORS[FAILS]
    assert points[0.1].marker.color == VERDICT_COLORS[UNMEASURED]
    assert list(points[0.5].error_x.array) == pytest.approx([0.1])
    assert list(points[0.5].error_x.arrayminus) == pytest.approx([0.1])
    thresholds = sorted(s.x0 for s in fig.layout.shapes)
    assert thresholds == [0.0, 0.0, 0.2]
    texts = [a.text for a in fig.layout.annotations]
    assert any("no FF model here" in t for t in texts)
    assert any(t.startswith("(a) MRL ≥ FF") and HOLDS in t for t in texts)
    assert fig.layout.xaxis.tickformat == ".1~%"  # a fraction: shown as percent
    assert fig.layout.xaxis2.tickformat is None
    with pytest.raises(ValueError, match="empty"):
        findings_figure(table.iloc[:0])
