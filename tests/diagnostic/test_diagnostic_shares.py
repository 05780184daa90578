"""Shares of norm and variance in the first dims, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.diagnostic.shares import SHARE_COLUMNS, energy_shares


def test_shares_of_a_diagonal_embedding():
    rng = np.random.default_rng(0)
    scales = np.array([1.0, 4.0, 2.0, 0.5])
    x = rng.normal(size=(4000, 4)) * scales + np.array([3.0, 0, 0, 0])
    table = energy_shares(x, [1, 2], n_boot=300)
    assert list(table.columns) == SHARE_COLUMNS
    got = table.set_index(["quantity", "variant", "truncate_dim"])["value"]
    var = x.var(axis=0)
    assert got[("variance", "prefix", 1)] == pytest.approx(var[0] / var.sum())
    assert got[("variance", "prefix", 2)] == pytest.approx(var[:2].sum() / var.sum())
    energy = (x**2).mean(axis=0)
    assert got[("norm", "prefix", 2)] == pytest.approx(energy[:2].sum() / energy.sum())
    # The ceiling: the strongest directions first (dim 1, then dim 2 of the variance).
    assert got[("variance", "pca", 1)] == pytest.approx(np.sort(var)[::-1][0] / var.sum(), rel=0.02)
    assert got[("variance", "pca", 2)] >= got[("variance", "prefix", 2)]
    assert got[("norm", "pca", 4)] == pytest.approx(1.0)
    prefix = table[table["variant"] == "prefix"]
    assert (prefix["ci_low"] <= prefix["value"]).all() and (
        prefix["value"] <= prefix["ci_high"]
    ).all()
    assert table.loc[table["variant"] == "pca", "ci_low"].isna().all()


def test_shares_refuse_bad_input():
    x = np.ones((10, 3))
    x[2, 1] = np.nan
    with pytest.raises(NonFiniteError, match="features holds 1 non-finite"):
        energy_shares(x, [1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        energy_shares(np.ones((1, 3)), [1])


def test_empty_prefixes_are_counted():
    x = np.array([[0, 0, 1.0, 2], [0, 3, 0, 1], [1, 0, 0, 0], [0, 0, 0, 5]])
    table = energy_shares(x, [1, 2, 3], n_boot=50)
    empty = table[table["quantity"] == "empty"].set_index("truncate_dim")["value"]
    # First nonzero dims: 3rd, 2nd, 1st, 4th.
    assert empty.to_dict() == {1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0}
    assert set(table.loc[table["quantity"] == "empty", "variant"]) == {"prefix"}
