"""Finding (f): adaptive retrieval with a small shortlist size matches full-size retrieval,
on real caches of hand-made features."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import feature_cache

from mrl_analysis.core.findings import FAILS, HOLDS, UNMEASURED, findings_table
from mrl_analysis.retrieval.study import CLAIM_F, FINDING_F, findings
from mrl_analysis.retrieval.synthetic import synthetic_nested

NESTING = [2, 4, 8, 16]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """``nested``: the first dims carry most of the geometry (a shortlist at 4 dims finds the
    full-size neighbours); ``noise_first``: the first 4 dims are pure noise, so a shortlist
    there misses them; ``FF-16``: not nested."""
    root = tmp_path_factory.mktemp("findings")
    db, dl, q, ql = synthetic_nested(600, 120, dim=16, num_classes=6, decay=2.0, seed=2)
    rng = np.random.default_rng(0)
    noisy = [
        np.concatenate([rng.normal(size=(len(x), 4)), x[:, :12]], 1).astype(np.float32)
        for x in (db, q)
    ]
    nested = {"nested": (db, q, "mrl"), "noise_first": (*noisy, "mrl-e"), "FF-16": (db, q, "ff")}
    database, queries = {}, {}
    for name, (x_db, x_q, kind) in nested.items():
        nesting = NESTING if kind != "ff" else [16]
        database[name] = feature_cache(root, name, "train", x_db, dl, nesting, kind)
        queries[name] = feature_cache(root, name, "test", x_q, ql, nesting, kind)
    return database, queries


def test_finding_holds_when_a_small_shortlist_finds_the_full_size_neighbours(caches):
    rows = findings(*caches, shortlist_size=60, n_boot=200)
    assert len(rows) == 1
    row = rows[0]
    assert row["finding"] == FINDING_F == "f" and row["claim"].startswith(CLAIM_F)
    assert row["verdict"] == HOLDS, row
    assert row["threshold"] == -0.01 and row["ci_low"] <= row["value"] <= row["ci_high"]
    # Default model: the first "mrl" cache; default Ds: the size nearest 16 below the full.
    assert "nested: Ds=8 shortlist of K=60 reranked at d=16" in row["claim"]
    # The cost ratio is the paper's MFLOPs: d·N / (Ds·N + d·K) = 16·600 / (8·600 + 16·60).
    assert f"{16 * 600 / (8 * 600 + 16 * 60):.1f}× fewer MFLOPs" in row["claim"]
    assert findings_table(rows).loc[0, "verdict"] == HOLDS


def test_finding_fails_when_the_shortlist_dims_carry_no_neighbours(caches):
    row = findings(*caches, model="noise_first", shortlist_dim=4, shortlist_size=20)[0]
    assert row["verdict"] == FAILS and row["ci_high"] < -0.01
    assert "noise_first: Ds=4 shortlist of K=20" in row["claim"]


def test_finding_is_unmeasured_without_a_nested_model(caches):
    database, queries = caches
    only_ff = ({"FF-16": database["FF-16"]}, {"FF-16": queries["FF-16"]})
    row = findings(*only_ff)[0]
    assert row["verdict"] == UNMEASURED and np.isnan(row["value"])
    assert "no MRL or MRL-E model" in row["reason"]
    with pytest.raises(ValueError, match="not among"):
        findings(*caches, model="MRL")
    with pytest.raises(ValueError, match="shortlist_dim"):
        findings(*caches, shortlist_dim=16)
    with pytest.raises(TypeError, match="k must be an integer"):
        findings(*caches, k=2.5)
