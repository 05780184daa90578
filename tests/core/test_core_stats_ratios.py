"""Ratios of sums with bootstrap intervals (core.stats.bootstrap_ratios)."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.stats import bootstrap_means, bootstrap_ratios


def test_ratio_of_sums_pairs_with_means_over_the_same_samples():
    rng = np.random.default_rng(0)
    group = rng.random(500) < 0.3  # the subset a rate is taken over
    hit = rng.random(500) < 0.7
    boot = bootstrap_ratios(np.stack([hit & group, ~hit & group]), group, 200)
    assert boot.mean == pytest.approx([hit[group].mean(), 1 - hit[group].mean()])
    # The same resamples as bootstrap_means: the ratio of their replicates.
    means = bootstrap_means(np.stack([hit & group, group]), 200)
    assert boot.replicates[0] == pytest.approx(means.replicates[0] / means.replicates[1])
    low, high = boot.interval()
    assert (low < boot.mean).all() and (boot.mean < high).all()


def test_empty_subsets_give_nan_and_are_left_out_of_intervals():
    den = np.zeros(50)
    den[0] = 1  # one sample in the subset: many resamples miss it
    boot = bootstrap_ratios(np.stack([den, np.zeros(50)]), np.stack([den, np.zeros(50)]), 300)
    assert boot.mean[0] == 1 and np.isnan(boot.mean[1])
    assert np.isnan(boot.replicates[0]).any() and not np.isnan(boot.replicates[0]).all()
    low, high = boot.interval()
    assert (low[0], high[0]) == (1.0, 1.0)
    assert np.isnan(low[1]) and np.isnan(high[1])
    with pytest.raises(ValueError, match="both be"):
        bootstrap_ratios(np.zeros((2, 5)), np.ones((3, 5)))
