"""Findings (c) and (d) of the paper on hand-made caches (routing.study.findings)."""

from __future__ import annotations

import numpy as np
import pytest
from hand_caches import hand_cache, one_hot_logits, predictions_right_on

from mrl_analysis.core.findings import COLUMNS, HOLDS, UNMEASURED
from mrl_analysis.routing.cascade import SplitSettings
from mrl_analysis.routing.study import findings

C = 4
N = 1000
LABELS = np.arange(N) % C
NESTING = [2, 8, 32]


def _by_key(rows: list[dict]) -> dict[str, dict]:
    assert all(list(r) == COLUMNS for r in rows)
    return {r["finding"]: r for r in rows}


def _cache(right: np.ndarray, confident: np.ndarray | None = None):
    """Logits right where ``right [G, N]``; the smallest size is very sure where
    ``confident [N]`` (so a cascade can stop there) and unsure elsewhere."""
    logits = one_hot_logits(predictions_right_on(LABELS, right, C), C)
    if confident is not None:
        logits[0] *= np.where(confident, 4.0, 0.1)[:, None]
    return hand_cache("mrl", NESTING, logits, LABELS)


def test_finding_c_is_the_oracle_gap_with_interval():
    rng = np.random.default_rng(0)
    right = rng.random((3, N)) < np.array([[0.5], [0.6], [0.7]])
    c = _by_key(findings({"MRL": _cache(right)}))["c"]
    gap = right.any(axis=0).mean() - right.mean(axis=1).max()
    assert c["value"] == pytest.approx(gap)
    assert c["ci_low"] < gap < c["ci_high"] and c["verdict"] == HOLDS
    # Nested correctness (a sample right at one size is right at every larger size): the
    # oracle is the largest size, the gap 0 in every resample, so it never holds.
    nested = np.zeros((3, N), bool)
    nested[:, :300], nested[1:, 300:500], nested[2:, 500:700] = True, True, True
    c = _by_key(findings({"MRL": _cache(nested)}))["c"]
    assert c["value"] == c["ci_low"] == c["ci_high"] == 0 and c["verdict"] != HOLDS


def test_finding_d_cascade_matches_the_largest_size_at_a_fraction_of_it():
    # The smallest size is right and very sure on 70% of the samples, 8 and 32 dims on all
    # of them: the cascade stops at 2 dims for those, at 8 for the rest, and is as
    # accurate as the largest size (a fraction (0.7 * 2 + 0.3 * 8) / 32 of it).
    confident = np.arange(N) % 10 < 7
    right = np.stack([confident, np.ones(N, bool), np.ones(N, bool)])
    d = _by_key(findings({"MRL": _cache(right, confident)}))["d"]
    assert d["threshold"] == 1.0 and d["verdict"] == HOLDS
    assert d["value"] == pytest.approx((0.7 * 2 + 0.3 * 8) / 32, abs=0.01)
    assert d["ci_low"] <= d["value"] <= d["ci_high"] < 1
    assert "10 splits" in d["effect"]


def test_finding_d_without_a_useful_cascade_is_the_largest_size():
    # Confidence says nothing: the cascade matches the largest size only by going there.
    right = np.stack([np.arange(N) % 2 == 0, np.arange(N) % 2 == 0, np.ones(N, bool)])
    settings = SplitSettings(n_splits=5, holdout=0.5)
    d = _by_key(findings({"MRL": _cache(right)}, settings=settings))["d"]
    assert d["value"] == pytest.approx(1.0) and d["ci_high"] == pytest.approx(1.0)
    assert d["verdict"] != HOLDS


def test_findings_unmeasured_without_a_nested_model():
    ff = hand_cache("ff", [8], np.zeros((1, N, C)), LABELS)
    rows = _by_key(findings({"FF-8": ff}))
    assert rows["c"]["verdict"] == rows["d"]["verdict"] == UNMEASURED
    assert "no MRL" in rows["c"]["reason"]


def test_findings_refuse_non_finite_logits():
    right = np.ones((3, N), bool)
    cache = _cache(right)
    cache._arrays["logits"] = cache.logits().copy()
    cache._arrays["logits"][1, 5, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        findings({"MRL": cache})
