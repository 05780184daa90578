"""Few-shot NCM: episode sampling, the vectorized NCM against brute force, the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.core.stats import mean_ci
from mrl_analysis.fewshot.episodes import (
    COLUMNS,
    episode_accuracies,
    episode_accuracy,
    fewshot_accuracy,
    sample_episodes,
)


def _blobs(n_per_class=30, n_classes=6, d=12, spread=1.0, seed=0, relu=False):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 2.0
    labels = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[labels] + spread * rng.normal(size=(labels.size, d))
    if relu:
        # Post-ReLU features: exact zeros, so many ties and zero vectors at small sizes.
        x = np.maximum(x, 0.0)
    perm = rng.permutation(labels.size)
    return x[perm], labels[perm]


def _brute_force(x, labels, episodes, nesting, metric):
    """Literal NCM: one episode, one size, one query at a time."""

    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    out = np.zeros((len(nesting), episodes.n_episodes))
    for g, m in enumerate(nesting):
        for e in range(episodes.n_episodes):
            means = []
            for j in range(episodes.ways):
                assert (labels[episodes.support[e, j]] == episodes.classes[e, j]).all()
                means.append(np.mean([unit(x[i, :m]) for i in episodes.support[e, j]], axis=0))
            hits = 0
            for j in range(episodes.ways):
                for i in episodes.query[e, j]:
                    q = unit(x[i, :m])
                    if metric == "cosine":
                        scores = [
                            q @ mu / np.linalg.norm(mu) if np.linalg.norm(mu) > 0 else 0.0
                            for mu in means
                        ]
                    else:
                        scores = [-np.sum((q - mu) ** 2) for mu in means]
                    hits += int(np.argmax(scores) == j)
            out[g, e] = hits / (episodes.ways * episodes.queries)
    return out


# --------------------------------------------------------------------------- sampling


def test_episodes_are_seeded_disjoint_and_class_pure():
    _, labels = _blobs(n_per_class=20, n_classes=8)
    a = sample_episodes(labels, ways=5, shots=3, queries=4, n_episodes=50, seed=7)
    b = sample_episodes(labels, ways=5, shots=3, queries=4, n_episodes=50, seed=7)
    c = sample_episodes(labels, ways=5, shots=3, queries=4, n_episodes=50, seed=8)
    for field in ("classes", "support", "query"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.support, c.support)
    assert (a.ways, a.shots, a.queries, a.n_episodes) == (5, 3, 4, 50)
    for e in range(a.n_episodes):
        assert len(set(a.classes[e])) == 5
        sup, qry = a.support[e].ravel(), a.query[e].ravel()
        assert not set(sup) & set(qry), "support and query share a sample"
        assert len(set(sup)) == sup.size and len(set(qry)) == qry.size
        np.testing.assert_array_equal(labels[a.support[e]], np.repeat(a.classes[e][:, None], 3, 1))
        np.testing.assert_array_equal(labels[a.query[e]], np.repeat(a.classes[e][:, None], 4, 1))


def test_episodes_cover_classes_and_samples_uniformly():
    _, labels = _blobs(n_per_class=10, n_classes=6)
    ep = sample_episodes(labels, ways=3, shots=1, queries=2, n_episodes=3000, seed=0)
    class_freq = np.bincount(ep.classes.ravel(), minlength=6) / ep.classes.size
    np.testing.assert_allclose(class_freq, 1 / 6, atol=0.02)
    # Every sample of a drawn class is equally likely to be a support or a query sample.
    support_freq = np.bincount(ep.support.ravel(), minlength=labels.size)
    query_freq = np.bincount(ep.query.ravel(), minlength=labels.size)
    assert support_freq.min() > 0.6 * support_freq.mean()
    assert query_freq.min() > 0.6 * query_freq.mean()


def test_all_ways_classes_filter_and_default_queries():
    _, labels = _blobs(n_per_class=12, n_classes=6)
    labels = labels.copy()
    labels[labels == 5] = 9  # labels need not be contiguous
    ep = sample_episodes(labels, ways=None, shots=2, queries=None, n_episodes=4, seed=0)
    assert ep.ways == 6 and ep.queries == 10
    assert set(np.unique(ep.classes)) == {0, 1, 2, 3, 4, 9}
    sub = sample_episodes(labels, ways=None, shots=2, n_episodes=4, classes=[1, 9], queries=3)
    assert set(np.unique(labels[sub.query])) == {1, 9} and sub.ways == 2


def test_sampling_rejects_impossible_requests():
    _, labels = _blobs(n_per_class=5, n_classes=4)
    with pytest.raises(ValueError, match="ways"):
        sample_episodes(labels, ways=5, shots=1, queries=1)
    with pytest.raises(ValueError, match="shots \\+ queries"):
        sample_episodes(labels, ways=None, shots=3, queries=3)
    with pytest.raises(ValueError, match="no samples left for queries"):
        sample_episodes(labels, ways=2, shots=5, queries=None)
    with pytest.raises(ValueError, match="no samples"):
        sample_episodes(labels, ways=2, shots=1, classes=[0, 42])
    with pytest.raises(TypeError, match="integer"):
        sample_episodes(labels.astype(float), ways=2, shots=1)
    with pytest.raises(TypeError, match="shots must be an integer"):
        sample_episodes(labels, ways=2, shots=1.5)


# --------------------------------------------------------------------------- NCM


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("relu", [False, True])
def test_ncm_equals_brute_force(metric, relu):
    x, labels = _blobs(n_per_class=15, n_classes=7, d=10, spread=2.5, relu=relu)
    x[:6] = 0.0  # zero vectors stay zero when normalized (their cosine scores all tie at 0)
    ep = sample_episodes(labels, ways=4, shots=3, queries=5, n_episodes=12, seed=1)
    # At m = 1 every normalized value is exactly -1, 0 or 1: ties there are exact and must
    # break the same way. Post-ReLU features at 2 <= m << d also tie in exact arithmetic
    # only (a zero and a unit vector averaged), which rounding may break either way.
    nesting = [1, 10] if relu else [1, 2, 3, 6, 10]
    got = episode_accuracy(x, ep, nesting, metric=metric, progress=False)
    want = _brute_force(x, labels, ep, nesting, metric)
    np.testing.assert_array_equal(got, want)
    # float32 input (the cache's dtype) computes in float32 and agrees on this data too.
    got32 = episode_accuracy(x.astype(np.float32), ep, nesting, metric=metric, progress=False)
    np.testing.assert_allclose(got32, want, atol=1 / 20 + 1e-9)
    assert np.mean(got32 == want) > 0.95


def test_sizes_to_evaluate_are_sorted_and_distinct():
    x, labels = _blobs(n_per_class=10, n_classes=4, d=8)
    ep = sample_episodes(labels, ways=3, shots=2, queries=3, n_episodes=6, seed=0)
    got = episode_accuracy(x, ep, [8, 2, 2], progress=False)
    np.testing.assert_array_equal(got, episode_accuracy(x, ep, [2, 8], progress=False))


def test_ncm_rejects_bad_input():
    x, labels = _blobs()
    ep = sample_episodes(labels, ways=2, shots=1, queries=1, n_episodes=2)
    with pytest.raises(ValueError, match="nesting"):
        episode_accuracy(x, ep, [4, 64])
    with pytest.raises(ValueError, match="metric"):
        episode_accuracy(x, ep, [4], metric="manhattan")
    with pytest.raises(ValueError, match="2-D"):
        episode_accuracy(x[0], ep, [4])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="features holds 1 non-finite"):
        episode_accuracy(bad, ep, [4])


# --------------------------------------------------------------------------- tables


def test_fewshot_table_shape_ci_and_determinism():
    x, labels = _blobs(n_per_class=25, n_classes=6, d=16, spread=1.5)
    kw = dict(shots=(1, 5), ways=(2, 6, None), queries=5, n_episodes=40, seed=3, model="MRL")
    table = fewshot_accuracy(x, labels, [2, 8, 16], progress=False, **kw)
    assert list(table.columns) == COLUMNS
    # ways 6 and None (= all 6 classes) are the same grid point, evaluated once.
    assert len(table) == 2 * 2 * 3
    assert set(table["ways"]) == {2, 6}
    assert table["accuracy"].between(0, 1).all()
    assert (table["ci_low"] <= table["accuracy"]).all()
    assert (table["accuracy"] <= table["ci_high"]).all()
    pd.testing.assert_frame_equal(table, fewshot_accuracy(x, labels, [2, 8, 16], **kw))
    full = table[(table["truncate_dim"] == 16) & (table["shots"] == 5)]
    assert (full["accuracy"] > 0.8).all(), "well separated blobs must be easy at full size"

    # The interval bootstraps the per-episode accuracies of the same episodes (which
    # episode_accuracies returns), resampled with the table's seed.
    ep = sample_episodes(labels, ways=2, shots=5, queries=5, n_episodes=40, seed=[3, 5, 2, 5])
    acc = episode_accuracy(x, ep, [2, 8, 16], progress=False)
    np.testing.assert_array_equal(
        acc,
        episode_accuracies(
            x, labels, [2, 8, 16], shots=5, ways=2, queries=5, n_episodes=40, seed=3
        ),
    )
    rows = table[(table["shots"] == 5) & (table["ways"] == 2)].sort_values("truncate_dim")
    expected = mean_ci(acc, seed=3)
    np.testing.assert_allclose(rows["accuracy"], acc.mean(axis=1))
    np.testing.assert_allclose(rows["ci_low"], expected["ci_low"])
    np.testing.assert_allclose(rows["ci_high"], expected["ci_high"])
    # A wide enough interval: roughly +-2 standard errors of the mean over 40 episodes.
    se = acc[0].std(ddof=1) / np.sqrt(40)
    assert rows["ci_high"].iat[0] - rows["ci_low"].iat[0] == pytest.approx(3.9 * se, rel=0.3)


def test_novel_class_setting_uses_only_given_classes():
    x, labels = _blobs(n_per_class=20, n_classes=6)
    table = fewshot_accuracy(
        x, labels, [12], shots=(1,), ways=(None,), classes=[3, 4, 5], n_episodes=10, progress=False
    )
    assert table["ways"].tolist() == [3]
    with pytest.raises(ValueError, match="ways"):
        fewshot_accuracy(x, labels, [12], ways=(5,), classes=[3, 4, 5], progress=False)
