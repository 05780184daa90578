"""Accuracy per size: linear heads, MRL-E interpolation, k-NN (faiss) and baselines.

Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from mrl_analysis.accuracy.baselines import baseline_knn_accuracy, reduce
from mrl_analysis.accuracy.metrics import (
    COLUMNS,
    interpolation_sizes,
    knn_accuracy,
    knn_vote,
    linear_accuracy,
    method_label,
    mrl_e_interpolated_accuracy,
)
from mrl_analysis.models.network import MRLEHead


def value(table: pd.DataFrame, truncate_dim: int, metric: str) -> float:
    row = table[(table["truncate_dim"] == truncate_dim) & (table["metric"] == metric)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def clustered(n: int, d: int, classes: int, seed: int, spread: float = 1.5):
    """Features around class centres, so k-NN accuracy is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    labels = rng.integers(0, classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def brute_knn_predictions(train, train_labels, test, m, k, normalize=True):
    """Reference k-NN: full distance matrix, per-query Counter vote."""
    xb = train[:, :m].astype(np.float64)
    xq = test[:, :m].astype(np.float64)
    if normalize:
        xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    dist = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    preds = []
    for row in train_labels[order]:
        counts = Counter(row.tolist())
        best = max(counts.values())
        preds.append(next(label for label in row if counts[label] == best))
    return np.array(preds)


# --------------------------------------------------------------------------- linear


def test_linear_accuracy_hand_example():
    # 2 nesting sizes, 4 samples, 6 classes; labels 0, 1, 2, 3.
    small = np.array(
        [
            [9, 1, 2, 3, 4, 5],  # label 0 ranked 1st -> top1, top5
            [9, 8, 1, 1, 1, 1],  # label 1 ranked 2nd -> top5 only
            [6, 5, 0, 4, 3, 2],  # label 2 ranked 6th -> neither
            [1, 2, 3, 9, 0, 0],  # label 3 ranked 1st
        ],
        dtype=np.float32,
    )
    large = np.array(
        [
            [1, 2, 3, 4, 5, 6],  # label 0 ranked 6th
            [0, 9, 0, 0, 0, 0],  # 1st
            [0, 0, 9, 0, 0, 0],  # 1st
            [5, 4, 3, 2, 1, 0],  # label 3 ranked 4th -> top5 only
        ],
        dtype=np.float32,
    )
    table = linear_accuracy(np.stack([small, large]), np.array([0, 1, 2, 3]), [8, 16], model="MRL")
    assert list(table.columns) == COLUMNS
    assert len(table) == 4
    assert value(table, 8, "top1") == 0.5
    assert value(table, 8, "top5") == 0.75
    assert value(table, 16, "top1") == 0.5
    assert value(table, 16, "top5") == 0.75
    assert set(table["method"]) == {"linear"}
    assert set(table["label"]) == {"MRL"}


def test_linear_ties_follow_argmax():
    logits = np.zeros((1, 2, 3), dtype=np.float32)
    # All classes tie: argmax predicts class 0, so only the sample labelled 0 is right.
    table = linear_accuracy(logits, np.array([0, 2]), [4], topk=(1, 2))
    assert value(table, 4, "top1") == 0.5
    assert value(table, 4, "top2") == 0.5  # class 2 ranks 3rd among equals


def test_linear_matches_argsort_on_random_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500, 20)).astype(np.float32)
    labels = rng.integers(0, 20, 500)
    table = linear_accuracy(logits, labels, [2, 4, 8], topk=(1, 3, 5))
    top = np.argsort(-logits, axis=-1, kind="stable")
    for g, m in enumerate([2, 4, 8]):
        for k in (1, 3, 5):
            expected = (top[g, :, :k] == labels[:, None]).any(axis=1).mean()
            assert value(table, m, f"top{k}") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("logits", "labels", "nesting", "kwargs", "message"),
    [
        (np.zeros((4, 3)), np.zeros(4, int), [8], {}, r"pass logits\[None\]"),
        (np.zeros((2, 4, 3)), np.zeros(4, int), [8], {}, "nesting has 1 sizes"),
        (np.zeros((2, 4, 3)), np.zeros(4, int), [8, 4], {}, "strictly increasing"),
        (np.zeros((1, 0, 3)), np.zeros(0, int), [8], {}, "no samples"),
        (np.zeros((1, 4, 3)), np.zeros(5, int), [8], {}, "one label per sample"),
        (np.zeros((1, 4, 3)), np.array([0, 1, 2, 3]), [8], {}, r"0\.\.2"),
        (np.zeros((1, 4, 3)), np.zeros(4, int), [8], {"topk": (1, 5)}, "number of classes"),
        (np.full((1, 4, 3), np.nan), np.zeros(4, int), [8], {"topk": 1}, "NaN"),
        (np.full((1, 4, 3), -np.inf), np.zeros(4, int), [8], {"topk": 1}, "non-finite"),
    ],
)
def test_linear_bad_input(logits, labels, nesting, kwargs, message):
    with pytest.raises(ValueError, match=message):
        linear_accuracy(logits, labels, nesting, **kwargs)


# --------------------------------------------------------------------------- MRL-E


def test_interpolation_sizes():
    assert interpolation_sizes([8, 16, 32]) == [8, 12, 16, 24, 32]
    assert interpolation_sizes([1, 2, 4], steps=0) == [1, 2, 4]
    assert interpolation_sizes([8, 16], steps=3) == [8, 10, 12, 14, 16]


def test_mrl_e_interpolation_matches_the_real_head():
    torch.manual_seed(0)
    d, classes, nesting = 16, 7, [2, 4, 8, 16]
    head = MRLEHead(nesting, classes, d)
    features = torch.randn(300, d)
    labels = torch.randint(0, classes, (300,)).numpy()
    weight = head.nesting_classifier_0.weight.detach().numpy()
    bias = head.nesting_classifier_0.bias.detach().numpy()
    with torch.no_grad():
        trained = linear_accuracy(head(features).numpy(), labels, nesting, topk=(1, 3))
        # An untrained size, straight from the model's own logits_at.
        between = head.logits_at(features, 6).numpy()[None]
    table = mrl_e_interpolated_accuracy(
        features.numpy(), weight, bias, labels, [*nesting, 6], topk=(1, 3), batch_size=128
    )
    assert set(table["method"]) == {"interpolated"}
    assert set(table["label"]) == {"MRL-E (interpolated)"}
    for m in nesting:
        for metric in ("top1", "top3"):
            assert value(table, m, metric) == pytest.approx(value(trained, m, metric))
    direct = linear_accuracy(between, labels, [6], topk=(1, 3))
    assert value(table, 6, "top1") == pytest.approx(value(direct, 6, "top1"))
    assert value(table, 6, "top3") == pytest.approx(value(direct, 6, "top3"))


def test_mrl_e_bad_shapes():
    features = np.zeros((5, 8), np.float32)
    with pytest.raises(ValueError, match="features have d = 8"):
        mrl_e_interpolated_accuracy(features, np.zeros((3, 4)), np.zeros(3), np.zeros(5, int), [4])
    with pytest.raises(ValueError, match="bias must have shape"):
        mrl_e_interpolated_accuracy(features, np.zeros((3, 8)), np.zeros(4), np.zeros(5, int), [4])
    with pytest.raises(ValueError, match=r"within 1\.\.8"):
        mrl_e_interpolated_accuracy(features, np.zeros((3, 8)), np.zeros(3), np.zeros(5, int), [16])


# --------------------------------------------------------------------------- k-NN


def test_knn_vote_breaks_ties_by_nearest():
    neighbors = np.array(
        [
            [3, 1, 1, 3],  # 1 and 3 tie at two votes; 3 is nearest
            [2, 1, 1, 0],  # 1 wins outright
            [0, 1, 2, 3],  # all tie: nearest
            [4, 4, 4, 4],
        ]
    )
    assert knn_vote(neighbors).tolist() == [3, 1, 0, 4]


@pytest.mark.parametrize("normalize", [True, False])
def test_1nn_matches_brute_force_after_truncation(normalize):
    train, train_labels = clustered(400, 24, 5, seed=1)
    test, test_labels = clustered(150, 24, 5, seed=2)
    sizes = [2, 5, 12, 24]
    table = knn_accuracy(
        train, train_labels, test, test_labels, sizes, normalize=normalize, batch_size=64
    )
    assert list(table.columns) == COLUMNS
    for m in sizes:
        expected = (
            brute_knn_predictions(train, train_labels, test, m, 1, normalize) == test_labels
        ).mean()
        assert value(table, m, "1-NN") == pytest.approx(expected)
    assert 0.2 < value(table, 24, "1-NN") < 1


def test_knn_voting_matches_brute_force():
    # Three classes and even k make vote ties common.
    train, train_labels = clustered(300, 10, 3, seed=3, spread=2.5)
    test, test_labels = clustered(200, 10, 3, seed=4, spread=2.5)
    ks = (1, 2, 4, 5)
    table = knn_accuracy(train, train_labels, test, test_labels, [3, 10], k=ks, batch_size=50)
    for m in (3, 10):
        for k in ks:
            preds = brute_knn_predictions(train, train_labels, test, m, k)
            assert value(table, m, f"{k}-NN") == pytest.approx((preds == test_labels).mean())


def test_knn_leaves_inputs_untouched():
    train, train_labels = clustered(50, 8, 3, seed=5)
    before = train.copy()
    knn_accuracy(train, train_labels, train, train_labels, [8])
    np.testing.assert_array_equal(train, before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test": np.zeros((4, 6), np.float32)}, "test_features have d = 6"),
        ({"sizes": [16]}, r"within 1\.\.8"),
        ({"k": (20,)}, "number of train samples is 10"),
        ({"train_labels": np.zeros(9, int)}, "one label per sample"),
        ({"train": np.zeros(10, np.float32)}, "2-D array"),
        ({"test": np.full((4, 8), np.nan, np.float32)}, "test_features holds 32 non-finite"),
    ],
)
def test_knn_bad_input(kwargs, message):
    args = {
        "train": np.ones((10, 8), np.float32),
        "train_labels": np.zeros(10, int),
        "test": np.ones((4, 8), np.float32),
        "test_labels": np.zeros(4, int),
        "sizes": [4],
        "k": (1,),
    } | kwargs
    with pytest.raises(ValueError, match=message):
        knn_accuracy(
            args["train"],
            args["train_labels"],
            args["test"],
            args["test_labels"],
            args["sizes"],
            k=args["k"],
        )


# --------------------------------------------------------------------------- baselines


def test_svd_at_full_size_keeps_1nn_accuracy():
    train, train_labels = clustered(300, 16, 4, seed=6, spread=2.0)
    test, test_labels = clustered(120, 16, 4, seed=7, spread=2.0)
    original = knn_accuracy(train, train_labels, test, test_labels, [16])
    table = baseline_knn_accuracy(train, train_labels, test, test_labels, [4, 16], methods=("svd",))
    assert value(table, 16, "1-NN") == value(original, 16, "1-NN")
    assert set(table["label"]) == {"FF SVD"}


def test_svd_projects_on_top_singular_directions():
    train, _ = clustered(200, 12, 3, seed=8)
    test, _ = clustered(30, 12, 3, seed=9)
    train_m, test_m = reduce(train, test, 4, "svd")
    assert train_m.shape == (200, 4) and test_m.shape == (30, 4)
    assert train_m.dtype == np.float32
    _, _, vt = np.linalg.svd(train.astype(np.float64), full_matrices=False)
    # Same subspace up to signs: the norms of the projections agree.
    np.testing.assert_allclose(
        np.linalg.norm(test_m, axis=1), np.linalg.norm(test @ vt[:4].T, axis=1), rtol=1e-3
    )


def test_jl_is_deterministic_by_seed_and_nested():
    train, train_labels = clustered(100, 16, 3, seed=10)
    test, test_labels = clustered(40, 16, 3, seed=11)
    a, _ = reduce(train, test, 6, "jl", seed=3)
    b, _ = reduce(train, test, 6, "jl", seed=3)
    c, _ = reduce(train, test, 6, "jl", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Fitting at the largest size and truncating equals fitting at each size.
    table = baseline_knn_accuracy(
        train, train_labels, test, test_labels, [6, 12], methods=("jl",), seed=3
    )
    train6, test6 = reduce(train, test, 6, "jl", seed=3)
    direct = knn_accuracy(train6, train_labels, test6, test_labels, [6])
    assert value(table, 6, "1-NN") == value(direct, 6, "1-NN")


def test_first_m_baseline_is_plain_truncation():
    train, train_labels = clustered(120, 8, 3, seed=12)
    test, test_labels = clustered(50, 8, 3, seed=13)
    table = baseline_knn_accuracy(
        train, train_labels, test, test_labels, [2, 8], methods=("first-m",), model="FF-8"
    )
    plain = knn_accuracy(train, train_labels, test, test_labels, [2, 8])
    np.testing.assert_array_equal(table["value"], plain["value"])
    assert set(table["label"]) == {"FF Rand. FS"}


def test_reduce_bad_input():
    x = np.zeros((10, 8), np.float32)
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce(x, x, 4, "pca")
    with pytest.raises(ValueError, match=r"1\.\.8"):
        reduce(x, x, 9, "jl")
    with pytest.raises(ValueError, match="at least m train samples"):
        reduce(x[:3], x, 4, "svd")
    with pytest.raises(ValueError, match="same model"):
        reduce(x, np.zeros((2, 4)), 2, "svd")


# --------------------------------------------------------------------------- figure


def test_method_labels():
    assert method_label("mrl", "linear") == "MRL"
    assert method_label("MRL-E", "interpolated") == "MRL-E (interpolated)"
    assert method_label("FF-64", "first-m") == "FF"
    assert method_label("FF-2048", "first-m", baseline=True) == "FF Rand. FS"
    assert method_label("ff", "svd") == "FF SVD"
    assert method_label("my model", "linear") == "my model"


# --------------------------------------------------------------------------- intervals


def test_every_accuracy_row_has_a_bootstrap_interval_from_shared_resamples():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 800)
    logits = rng.normal(size=(2, 800, 4)).astype(np.float32)
    logits[1, np.arange(800), labels] += 2  # the larger size is better
    table = linear_accuracy(logits, labels, [2, 8], topk=(1, 2), model="MRL")
    assert (table["ci_low"] < table["value"]).all() and (table["value"] < table["ci_high"]).all()
    # The interval is the percentile bootstrap of the per-sample outcomes, resampled with
    # seed 0: another table over the same samples (FF-8 alone) gets the very same interval.
    alone = linear_accuracy(logits[1:], labels, [8], topk=(1, 2), model="FF-8")
    both = table[table["truncate_dim"] == 8].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        alone[["value", "ci_low", "ci_high"]], both[["value", "ci_low", "ci_high"]]
    )
    with pytest.raises(ValueError, match="n_boot"):
        linear_accuracy(logits, labels, [2, 8], topk=1, n_boot=0)
