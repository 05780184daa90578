"""Findings (a) and (b) of the paper on hand-made caches (accuracy.study.findings)."""

from __future__ import annotations

import numpy as np
import pytest
from hand_caches import hand_cache, one_hot_logits, predictions_right_on

from mrl_analysis.accuracy.study import findings
from mrl_analysis.core.findings import COLUMNS, FAILS, HOLDS, UNMEASURED

C = 5
N = 2000
LABELS = np.arange(N) % C


def _right(rate: float, seed: int) -> np.ndarray:
    """Which samples are right: the first ``rate`` share of a seeded permutation."""
    order = np.random.default_rng(seed).permutation(N)
    out = np.zeros(N, bool)
    out[order[: int(rate * N)]] = True
    return out


def _linear_cache(kind: str, nesting: list[int], rates: list[float], seed: int):
    right = np.stack([_right(r, seed + i) for i, r in enumerate(rates)])
    logits = one_hot_logits(predictions_right_on(LABELS, right, C), C)
    return hand_cache(kind, nesting, logits, LABELS)


def _by_key(rows: list[dict]) -> dict[str, dict]:
    assert all(list(r) == COLUMNS for r in rows)
    return {r["finding"]: r for r in rows}


def test_finding_a_is_the_smallest_mrl_minus_ff_gap_at_ff_sizes():
    caches = {
        "MRL": _linear_cache("mrl", [2, 8, 32, 128], [0.80, 0.90, 0.92, 0.93], 0),
        "FF-2": _linear_cache("ff", [2], [0.60], 10),
        "FF-8": _linear_cache("ff", [8], [0.85], 20),
        "FF-128": _linear_cache("ff", [128], [0.99], 30),  # above small_max: not compared
    }
    a = _by_key(findings(caches))["a"]
    assert a["value"] == pytest.approx(0.90 - 0.85)
    assert a["ci_low"] < a["value"] < a["ci_high"]
    assert a["verdict"] == HOLDS and a["threshold"] == 0.0
    assert "k = 8" in a["effect"] and "[2, 8]" in a["effect"]
    # FF-8 better than MRL at 8 dims: the minimum is negative and clearly so.
    caches["FF-8"] = _linear_cache("ff", [8], [0.97], 20)
    a = _by_key(findings(caches))["a"]
    assert a["value"] == pytest.approx(0.90 - 0.97)
    assert a["verdict"] == FAILS


def test_finding_a_unmeasured_without_ff_models_or_mrl():
    mrl = _linear_cache("mrl", [2, 8], [0.8, 0.9], 0)
    a = _by_key(findings({"MRL": mrl}))["a"]
    assert a["verdict"] == UNMEASURED and np.isnan(a["value"])
    assert "no FF-k model" in a["reason"]
    a = _by_key(findings({"FF-2": _linear_cache("ff", [2], [0.6], 1)}))["a"]
    assert a["verdict"] == UNMEASURED and "no MRL" in a["reason"]


def test_finding_a_refuses_caches_of_different_samples():
    mrl = _linear_cache("mrl", [2, 8], [0.8, 0.9], 0)
    other = hand_cache("ff", [2], np.zeros((1, N, C)), (LABELS + 1) % C)
    with pytest.raises(ValueError, match="different samples"):
        findings({"MRL": mrl, "FF-2": other})


def _features(n: int, seed: int, informative_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """16-d features: class signal in 4 dims, high-variance noise in the other 12.

    MRL-like: the signal comes first. FF-like: the signal comes last, so the first d
    features ("Rand. FS") and the top-variance SVD directions both miss it at small d.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    centres = np.random.default_rng(99).normal(size=(C, 4)) * 3
    signal = centres[labels] + 0.3 * rng.normal(size=(n, 4))
    noise = 10 * rng.normal(size=(n, 12))
    x = np.hstack([signal, noise] if informative_first else [noise, signal])
    return x.astype(np.float32), labels


def _knn_caches(n: int, seed: int):
    out = {}
    for name, kind, nesting, first in [
        ("MRL", "mrl", [2, 4, 8, 16], True),
        ("FF-16", "ff", [16], False),
    ]:
        x, labels = _features(n, seed, first)
        logits = np.zeros((len(nesting), n, C), dtype=np.float32)
        out[name] = hand_cache(kind, nesting, logits, labels, features=x)
    return out


def test_finding_b_mrl_1nn_above_rand_fs_and_svd():
    evals, dbs = _knn_caches(300, 1), _knn_caches(600, 2)
    b = _by_key(findings(evals, dbs, small_max=8, margin=0.1))["b"]
    assert b["verdict"] == HOLDS, b
    assert b["threshold"] == 0.1
    assert "[2, 4, 8]" in b["effect"] and "FF-16" in b["effect"]
    assert 0.1 < b["ci_low"] <= b["value"] <= b["ci_high"] <= 1
    # Queries are subsampled, reproducibly.
    few = _by_key(findings(evals, dbs, small_max=8, max_queries=100))["b"]
    assert "100 queries" in few["effect"]
    assert few == _by_key(findings(evals, dbs, small_max=8, max_queries=100))["b"]


def test_finding_b_unmeasured_without_database():
    evals = _knn_caches(100, 1)
    b = _by_key(findings(evals))["b"]
    assert b["verdict"] == UNMEASURED and "database" in b["reason"]
    b = _by_key(findings({"MRL": evals["MRL"]}, {"MRL": evals["MRL"]}))["b"]
    assert b["verdict"] == UNMEASURED and "no FF model" in b["reason"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"small_max": 8.5}, TypeError, "small_max"),
        ({"margin": 2}, ValueError, "fraction"),
        ({"max_queries": 0}, ValueError, "max_queries"),
    ],
)
def test_findings_settings_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        findings(_knn_caches(50, 1), **kwargs)
