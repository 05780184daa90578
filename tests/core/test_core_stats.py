"""Bootstrap intervals, McNemar tests and the smallest size within tolerance, with interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from mrl_analysis.core.stats import (
    adjacent_tests,
    bootstrap_means,
    mcnemar,
    mean_ci,
    smallest_within_interval,
)


def test_bootstrap_interval_matches_the_binomial_spread():
    rng = np.random.default_rng(1)
    x = rng.random(4000) < 0.7
    out = mean_ci(x[None], n_boot=2000, seed=0).iloc[0]
    se = np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert out.value == pytest.approx(x.mean())
    assert out.ci_low == pytest.approx(x.mean() - 1.96 * se, abs=0.004)
    assert out.ci_high == pytest.approx(x.mean() + 1.96 * se, abs=0.004)


def test_bootstrap_rows_share_resamples_and_blocks_agree():
    rng = np.random.default_rng(2)
    x = (rng.random((3, 500)) < 0.6).astype(float)
    boot = bootstrap_means(np.vstack([x, x[:1]]), n_boot=300, seed=5)
    np.testing.assert_array_equal(boot.replicates[0], boot.replicates[3])  # same resamples
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_means(np.array([[0.0, np.nan]]))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0], bool)
    out = mcnemar(a, b).iloc[0]
    assert (out.only_a, out.only_b) == (5, 1)
    assert out.p_value == pytest.approx(sps.binomtest(1, 6, 0.5).pvalue)
    assert mcnemar(a, a).iloc[0].p_value == 1.0


def test_adjacent_tests_and_smallest_size_interval():
    rng = np.random.default_rng(3)
    base = rng.random(3000)
    # Nested-like: a sample right at a size stays right at larger ones.
    correct = np.stack([base < p for p in (0.4, 0.75, 0.8, 0.801)])
    tests = adjacent_tests(correct, [2, 4, 8, 16])
    assert list(tests.significant) == [True, True, False]
    assert tests.delta.iloc[0] == pytest.approx(correct[1].mean() - correct[0].mean())
    boot = bootstrap_means(correct, n_boot=500)
    got = smallest_within_interval(boot, [2, 4, 8, 16], tolerance=0.01)
    assert got["smallest_dim"] == 8 and got["reference_dim"] == 16
    assert got["ci_low_dim"] in (4, 8) and got["ci_high_dim"] in (8, 16)
