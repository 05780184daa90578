"""Findings (e) and (h) of the paper on hand-made caches (superclass.study.findings)."""

from __future__ import annotations

import numpy as np
import pytest
from hand_caches import hand_cache, one_hot_logits

from mrl_analysis.core.findings import COLUMNS, FAILS, HOLDS, UNMEASURED
from mrl_analysis.superclass.study import findings

# Six classes in two superclasses of three: 0-2 "animal", 3-5 "vehicle".
C = 6
IDS = [f"c{i}" for i in range(C)]
HIERARCHY = {c: ("animal" if i < 3 else "vehicle") for i, c in enumerate(IDS)}
N = 1200
LABELS = np.arange(N) % C
SIBLING = np.where(LABELS % 3 == 2, LABELS - 2, LABELS + 1)  # same superclass, other class
STRANGER = (LABELS + 3) % C  # the other superclass


def _by_key(rows: list[dict]) -> dict[str, dict]:
    assert all(list(r) == COLUMNS for r in rows)
    return {r["finding"]: r for r in rows}


def _cache(small: np.ndarray, hierarchy=HIERARCHY, nesting=(2, 8, 64)):
    """Predictions ``small`` at the smallest size, the label at every larger size."""
    preds = np.stack([small] + [LABELS] * (len(nesting) - 1))
    logits = one_hot_logits(preds, C)
    return hand_cache("mrl", list(nesting), logits, LABELS, class_ids=IDS, hierarchy=hierarchy)


def test_errors_inside_superclasses_hold_both_findings():
    # At 2 dims: 50% right, 40% a sibling class, 10% the other superclass.
    part = np.arange(N) % 10
    small = np.where(part < 5, LABELS, np.where(part < 9, SIBLING, STRANGER))
    rows = _by_key(findings({"MRL": _cache(small)}))
    e, h = rows["e"], rows["h"]
    # Fine falls 50 points, superclass accuracy 10: (e) = 0.5 - 0.1.
    assert e["value"] == pytest.approx(0.4) and e["verdict"] == HOLDS
    assert "d = 2 vs 64" in e["effect"]
    # 80% of the errors are inside; a random wrong class would be 2 of 5 = 40%.
    assert h["value"] == pytest.approx(0.8 - 0.4) and h["verdict"] == HOLDS
    assert h["ci_low"] < h["value"] < h["ci_high"] and "600 errors" in h["effect"]


def test_errors_across_superclasses_fail_both_findings():
    part = np.arange(N) % 10
    small = np.where(part < 5, LABELS, STRANGER)  # every error leaves the superclass
    rows = _by_key(findings({"MRL": _cache(small)}))
    # Fine and superclass accuracy fall alike: (e) = 0; errors inside: 0% vs 40% chance.
    assert rows["e"]["value"] == pytest.approx(0.0) and rows["e"]["verdict"] != HOLDS
    assert rows["h"]["value"] == pytest.approx(-0.4) and rows["h"]["verdict"] == FAILS


def test_truncate_dim_chooses_the_small_size_and_is_an_int():
    part = np.arange(N) % 10
    small = np.where(part < 5, LABELS, SIBLING)
    cache = _cache(small)
    at_8 = _by_key(findings({"MRL": cache}, truncate_dim=8))
    assert at_8["e"]["value"] == 0 and "d = 8" in at_8["e"]["effect"]
    assert at_8["h"]["verdict"] == UNMEASURED and "no errors" in at_8["h"]["reason"]
    with pytest.raises(TypeError, match="truncate_dim"):
        findings({"MRL": cache}, truncate_dim=8.0)
    with pytest.raises(ValueError, match="not a nesting size"):
        findings({"MRL": cache}, truncate_dim=4)


def test_a_user_hierarchy_replaces_a_missing_one():
    small = np.where(np.arange(N) // C % 2 == 0, LABELS, SIBLING)
    cache = _cache(small, hierarchy=None)
    rows = _by_key(findings({"MRL": cache}))
    assert {r["verdict"] for r in rows.values()} == {UNMEASURED}
    assert "no class hierarchy" in rows["e"]["reason"]
    rows = _by_key(findings({"MRL": cache}, hierarchy=HIERARCHY))
    assert rows["h"]["value"] == pytest.approx(1 - 0.4)


def test_reject_classes_are_left_out_of_the_error_finding():
    # Classes 3-5 are outside the hierarchy: they pool into "other", whose errors do not count.
    partial = {c: "animal" for c in IDS[:3]}
    small = np.where(np.arange(N) // C % 2 == 0, LABELS, SIBLING)
    h = _by_key(findings({"MRL": _cache(small, hierarchy=partial)}))["h"]
    assert "300 errors" in h["effect"]  # half of the animal samples are wrong
    assert h["value"] == pytest.approx(1 - 0.4)


def test_unmeasured_without_a_nested_model():
    ff = hand_cache("ff", [8], np.zeros((1, N, C)), LABELS, class_ids=IDS, hierarchy=HIERARCHY)
    rows = _by_key(findings({"FF-8": ff}))
    assert rows["e"]["verdict"] == rows["h"]["verdict"] == UNMEASURED
