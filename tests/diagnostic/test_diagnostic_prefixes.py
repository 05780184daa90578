"""Prefixes vs PCA vs random dims on embeddings whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.diagnostic.headlines import (
    MATRYOSHKA,
    NOT_NESTED,
    PCA_FIRST,
    VERDICT_COLUMNS,
    default_small_max,
    verdict_row,
    verdicts,
)
from mrl_analysis.diagnostic.prefixes import (
    QUALITY_COLUMNS,
    prefix_quality,
    principal_basis,
    random_dims,
)

D, K = 32, 5
SIZES = [2, 4, 8, 16]


def _embedding(n: int, seed: int, kind: str = "nested") -> tuple[np.ndarray, np.ndarray]:
    """``nested``: the class signal sits in dims 0-3, the rest is noise; ``rotated``: the
    same features turned by a fixed random rotation (signal spread over every dim);
    ``blind``: labels that no dimension predicts."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    centers = np.random.default_rng(99).normal(size=(K, 4)) * 3
    x = rng.normal(size=(n, D))
    if kind != "blind":
        x[:, :4] += centers[labels]
    if kind == "rotated":
        rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(D, D)))
        x = x @ rotation
    return x.astype(np.float32), labels


def _quality(kind: str, **kw):
    db, dl = _embedding(2000, 0, kind)
    q, ql = _embedding(300, 1, kind)
    return prefix_quality(db, dl, q, ql, SIZES, n_boot=300, progress=False, **kw)


@pytest.fixture(scope="module")
def nested():
    return _quality("nested")


def test_table_layout_and_full_size_rows(nested):
    table = nested.table("toy")
    assert list(table.columns) == QUALITY_COLUMNS
    assert nested.sizes == [*SIZES, D]  # the full size is always added
    assert set(table["variant"]) == {"prefix", "pca", "random", "norm-first", "full"}
    at_full = table[table["truncate_dim"] == D]
    for metric in ("knn", "map"):
        values = at_full.loc[at_full["metric"] == metric, "value"]
        assert values.nunique() == 1, "every variant is the full embedding at m = d"
    assert (table["ci_low"] <= table["value"] + 1e-12).all()
    assert (table["value"] <= table["ci_high"] + 1e-12).all()
    rand = table[(table["variant"] == "random") & (table["truncate_dim"] < D)]
    assert (rand["draw_min"] <= rand["value"]).all() and (rand["value"] <= rand["draw_max"]).all()
    assert table.loc[table["variant"] == "prefix", "draw_min"].isna().all()
    assert set(table["metric_label"]) == {"1-NN accuracy", "mAP@10"}


def test_a_nested_embedding_is_matryoshka(nested):
    row = verdict_row("toy", nested, small_max=8)
    assert row["verdict"] == MATRYOSHKA
    assert row["vs_random_low"] > 0.4  # random 2-8 dims of 32 mostly miss dims 0-3
    assert row["vs_pca_low"] < 0 < row["vs_pca_high"]  # PCA finds the same 4 dims
    # Dims 0-3 hold everything: within one point of the full size from m = 4.
    assert (row["smallest_dim"], row["smallest_dim_low"], row["smallest_dim_high"]) == (4, 4, 4)
    assert row["text"].startswith("toy: Matryoshka. At m ≤ 8, prefixes match PCA")
    table = nested.table()
    mapped = table[table["metric"] == "map"].set_index(["variant", "truncate_dim"])["value"]
    value, _, _ = nested.difference("prefix", "random", "map", [2, 4])
    assert value == pytest.approx(
        np.mean([mapped[("prefix", m)] - mapped[("random", m)] for m in (2, 4)])
    )


def test_a_rotated_embedding_needs_pca_and_pca_does_not_care(nested):
    rotated = _quality("rotated")
    row = verdict_row("rotated", rotated, small_max=8)
    assert row["verdict"] == PCA_FIRST and row["vs_pca_high"] < -0.3
    assert row["vs_random_low"] < 0 < row["vs_random_high"]
    # A rotation changes no inner product: PCA gives the same quality either way.
    a, b = nested.table(), rotated.table()
    pca = (a["variant"] == "pca") & (a["metric"] == "map")
    np.testing.assert_allclose(a.loc[pca, "value"], b.loc[pca, "value"], atol=0.02)


def test_an_embedding_without_signal_is_not_nested():
    row = verdict_row("blind", _quality("blind"), small_max=8)
    assert row["verdict"] == NOT_NESTED
    assert verdicts([row]).columns.tolist() == VERDICT_COLUMNS


def test_normalizing_before_truncating_is_measured_as_the_bug_it_is():
    db, dl = _embedding(2000, 0)
    q, ql = _embedding(300, 1)
    db[:, 16:] *= 20  # loud noise dims dominate the full-size norm
    q[:, 16:] *= 20
    quality = prefix_quality(db, dl, q, ql, SIZES, n_boot=300, progress=False)
    value, low, high = quality.difference("norm-first", "prefix", "map", [4, 8])
    assert high < -0.1, "unnormalized prefixes rank by their (noisy) norms"
    assert verdict_row("loud", quality, small_max=8)["renormalization_high"] < 0


def test_helpers_and_validation():
    x, _ = _embedding(500, 0)
    basis = principal_basis(x)
    np.testing.assert_allclose(basis.T @ basis, np.eye(D), atol=1e-10)
    energy = np.linalg.norm(x @ basis, axis=0)
    assert (np.diff(energy) <= 1e-6).all(), "strongest directions first"
    dims = random_dims(D, 5, 3, seed=0)
    assert dims.shape == (3, 5) and all(len(set(r)) == 5 for r in dims)
    np.testing.assert_array_equal(dims, random_dims(D, 5, 3, seed=0))
    assert default_small_max([2, 4, 8], 512) == 16 and default_small_max([8, 16], 64) == 8
    db, dl = _embedding(50, 0)
    bad = db.copy()
    bad[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match="database holds 1 non-finite"):
        prefix_quality(bad, dl, db, dl, SIZES, progress=False)
    with pytest.raises(ValueError, match="sizes must lie in 1..32"):
        prefix_quality(db, dl, db, dl, [64], progress=False)
    with pytest.raises(ValueError, match="fewer than k = 10"):
        prefix_quality(db[:5], dl[:5], db, dl, SIZES, progress=False)
