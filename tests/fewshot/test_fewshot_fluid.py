"""FLUID: stream sampling, the blocked online NCM against a literal loop, bookkeeping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.fewshot.fluid import (
    ACCURACY_COLUMNS,
    CATEGORIES,
    CURVE_COLUMNS,
    evaluate_fluid,
    fluid_accuracy,
    fluid_learning_curve,
    fluid_predictions,
)
from mrl_analysis.fewshot.stream import FluidStream, make_stream


def _data(n=1500, n_classes=8, d=12, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d))
    labels = rng.integers(0, n_classes, n)
    x = centers[labels] * 0.7 + spread * rng.normal(size=(n, d))
    return x, labels, centers


def _literal_fluid(x, stream, nesting, init_x, init_y, metric):
    """The definition, one step at a time: predict with the current means, then update."""

    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    classes = list(stream.classes)
    out = np.empty((len(nesting), len(stream)), dtype=np.int64)
    for g, m in enumerate(nesting):
        sums = {c: np.zeros(m) for c in classes}
        counts = dict.fromkeys(classes, 0)
        if init_x is not None:
            for xi, yi in zip(init_x, init_y, strict=True):
                if yi in stream.pretrain_classes:
                    sums[yi] = sums[yi] + unit(xi[:m])
                    counts[yi] += 1
        for t, (i, y) in enumerate(zip(stream.indices, stream.labels, strict=True)):
            q = unit(x[i, :m])
            best, best_score = -1, -np.inf
            for c in classes:
                if counts[c] == 0:
                    continue  # an unseen novel class cannot be predicted
                mu = sums[c] / counts[c]
                if metric == "cosine":
                    norm = np.linalg.norm(mu)
                    score = q @ mu / norm if norm > 0 else 0.0
                else:
                    score = -np.sum((q - mu) ** 2)
                if score > best_score:
                    best, best_score = c, score
            out[g, t] = best
            sums[y] = sums[y] + q
            counts[y] += 1
    return out


# --------------------------------------------------------------------------- learner


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("block_size", [1, 7, 64, 5000])
def test_blocked_learner_equals_literal_loop(metric, init, block_size):
    x, labels, centers = _data()
    x[:10] = 0.0  # zero features: normalized to zero, every cosine score 0
    rng = np.random.default_rng(1)
    init_y = rng.integers(0, 8, 120)
    init_x = centers[init_y] * 0.7 + rng.normal(size=(120, centers.shape[1]))
    stream = make_stream(labels, [0, 1, 2, 3, 4], [5, 6, 7], n_samples=300, seed=2)
    kw = dict(init_features=init_x, init_labels=init_y) if init else {}
    nesting = [1, 2, 5, 12]
    got = fluid_predictions(
        x, stream, nesting, metric=metric, block_size=block_size, progress=False, **kw
    )
    want = _literal_fluid(x, stream, nesting, init_x if init else None, init_y, metric)
    np.testing.assert_array_equal(got, want)
    # float32 features (a cache's dtype) run the products in float32: same predictions here.
    got32 = fluid_predictions(
        x.astype(np.float32),
        stream,
        nesting,
        metric=metric,
        block_size=block_size,
        progress=False,
        **kw,
    )
    assert np.mean(got32 == want) > 0.995


def test_novel_classes_are_unknown_until_first_seen():
    x, labels, _ = _data(n=800, n_classes=4)
    stream = make_stream(labels, [], [0, 1, 2, 3], seed=0)
    preds = fluid_predictions(x, stream, [12], progress=False)[0]
    assert preds[0] == -1, "nothing is known before the first label"
    for c in range(4):
        first = np.flatnonzero(stream.labels == c)[0]
        assert not (preds[:first] == c).any(), f"class {c} predicted before it was seen"
        assert preds[first] != c
    # Pretrain classes initialised from training data can be predicted from step 0.
    init_y = np.array([0, 1])
    pre = FluidStream(stream.indices, stream.labels, pretrain_classes=[0, 1], novel_classes=[2, 3])
    preds = fluid_predictions(
        x, pre, [12], init_features=x[:2], init_labels=init_y, progress=False
    )[0]
    assert preds[0] in (0, 1)


def test_learner_rejects_bad_input():
    x, labels, _ = _data(n=200)
    stream = make_stream(labels, [0, 1, 2], [3, 4, 5, 6, 7], seed=0)
    with pytest.raises(ValueError, match="rows"):
        fluid_predictions(x[:10], stream, [4], progress=False)
    with pytest.raises(ValueError, match="nesting"):
        fluid_predictions(x, stream, [64], progress=False)
    with pytest.raises(ValueError, match="both"):
        fluid_predictions(x, stream, [4], init_features=x, progress=False)
    with pytest.raises(ValueError, match="pretrain classes \\[2\\]"):
        fluid_predictions(x, stream, [4], init_features=x[:2], init_labels=[0, 1])
    with pytest.raises(ValueError, match="metric"):
        fluid_predictions(x, stream, [4], metric="dot", progress=False)


# --------------------------------------------------------------------------- stream


def test_make_stream_is_seeded_long_tailed_and_without_replacement():
    labels = np.repeat(np.arange(10), 400)
    a = make_stream(labels, range(6), range(6, 10), seed=5)
    b = make_stream(labels, range(6), range(6, 10), seed=5)
    c = make_stream(labels, range(6), range(6, 10), seed=6)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert len(np.unique(a.indices)) == len(a), "a pool sample appears twice"
    np.testing.assert_array_equal(labels[a.indices], a.labels)
    counts = np.sort(a.class_table()["count"].to_numpy())[::-1]
    # Zipf, alpha = 1: the r-th most frequent class has 1/r of the head's samples; the
    # longest stream the pool allows gives the head class all its 400 samples.
    assert counts[0] == 400
    np.testing.assert_allclose(counts, 400 / np.arange(1, 11), atol=1)
    assert len(a) == counts.sum()
    assert set(a.pretrain_classes) == set(range(6)) and set(a.novel_classes) == set(range(6, 10))
    pareto = make_stream(labels, range(6), range(6, 10), distribution="pareto", alpha=1.5)
    assert pareto.distribution == "pareto" and len(pareto) > 0
    short = make_stream(labels, range(6), range(6, 10), n_samples=100, seed=5)
    assert len(short) == 100
    with pytest.raises(ValueError, match="n_samples"):
        make_stream(labels, range(6), range(6, 10), n_samples=len(a) + 50, seed=5)
    with pytest.raises(ValueError, match="no samples in the pool"):
        make_stream(labels, range(6), [42])
    with pytest.raises(ValueError, match="distribution"):
        make_stream(labels, range(6), [7], distribution="uniform")


def test_stream_validation():
    with pytest.raises(ValueError, match="both pretrain and novel"):
        FluidStream([0, 1], [0, 1], pretrain_classes=[0, 1], novel_classes=[1])
    with pytest.raises(ValueError, match="neither"):
        FluidStream([0, 1], [0, 5], pretrain_classes=[0], novel_classes=[1])
    with pytest.raises(ValueError, match="one label per sample"):
        FluidStream([0, 1, 2], [0, 1], pretrain_classes=[0], novel_classes=[1])


# --------------------------------------------------------------------------- bookkeeping


def _handmade():
    # Class 0 (pretrain): 4 samples, 1 (pretrain): 2, 2 (novel): 3, 3 (novel): 1,
    # 4 (pretrain): none in the stream.
    labels = np.array([0, 2, 0, 1, 2, 0, 3, 2, 1, 0])
    stream = FluidStream(np.arange(10), labels, pretrain_classes=[0, 1, 4], novel_classes=[2, 3])
    right = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    preds = np.where(right, labels, 4)[None, :]
    return stream, preds


def test_head_tail_pretrain_novel_bookkeeping():
    stream, preds = _handmade()
    table = stream.class_table(head_threshold=2)
    assert table.set_index("class")["category"].to_dict() == {
        0: "pretrain-head",
        1: "pretrain-tail",  # exactly T samples is tail: head needs more than T
        2: "novel-head",
        3: "novel-tail",
        4: "pretrain-absent",
    }
    acc = fluid_accuracy(preds, stream, [7], head_threshold=2, model="MRL")
    assert list(acc.columns) == ACCURACY_COLUMNS
    assert acc["category"].tolist() == list(CATEGORIES)
    got = acc.set_index("category")["accuracy"].to_dict()
    # Per-class accuracies: class 0 3/4, class 1 1/2, class 2 1/3, class 3 0/1.
    assert got["pretrain-head"] == pytest.approx(0.75)
    assert got["pretrain-tail"] == pytest.approx(0.5)
    assert got["novel-head"] == pytest.approx(1 / 3)
    assert got["novel-tail"] == pytest.approx(0.0)
    assert got["mean-per-class"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 3 + 0) / 4)
    assert got["overall"] == pytest.approx(0.5)
    counts = acc.set_index("category")[["n_classes", "n_samples"]]
    assert counts.loc["pretrain-head"].tolist() == [1, 4]
    assert counts.loc["mean-per-class"].tolist() == [4, 10]
    # A fraction threshold scales with the stream: 0.35 * 10 = 3.5 -> only class 0 is head.
    frac = fluid_accuracy(preds, stream, [7], head_threshold=0.35)
    frac = frac.set_index("category")
    assert frac.loc["novel-head", "n_classes"] == 0 and np.isnan(frac.loc["novel-head", "accuracy"])
    assert frac.loc["novel-tail", "n_classes"] == 2
    with pytest.raises(ValueError, match="shape"):
        fluid_accuracy(preds, stream, [7, 8])
    # nesting names the rows of predictions: in their (sorted) order, never reordered.
    two = np.concatenate([preds, preds])
    with pytest.raises(ValueError, match="strictly increasing"):
        fluid_accuracy(two, stream, [8, 7])
    with pytest.raises(ValueError, match="head_threshold"):
        fluid_accuracy(preds, stream, [7], head_threshold=0)


def test_learning_curve_is_cumulative_and_windowed():
    stream, preds = _handmade()
    curve = fluid_learning_curve(preds, stream, [7], points=10, window=4, model="MRL")
    assert list(curve.columns) == CURVE_COLUMNS
    right = (preds[0] == stream.labels).astype(float)
    rows = curve[curve["group"] == "all"].set_index("step")
    np.testing.assert_allclose(rows["accuracy"], np.cumsum(right) / np.arange(1, 11))
    assert rows.loc[10, "window_accuracy"] == pytest.approx(right[6:].mean())
    novel = curve[curve["group"] == "novel"].set_index("step")
    assert np.isnan(novel.loc[1, "accuracy"])  # no novel sample yet
    is_novel = np.isin(stream.labels, [2, 3])
    assert novel.loc[10, "accuracy"] == pytest.approx(right[is_novel].mean())


def test_evaluate_fluid_runs_every_size_in_order():
    x, labels, centers = _data(n=2000, d=16, spread=0.5)
    stream = make_stream(labels, [0, 1, 2, 3, 4], [5, 6, 7], seed=0)
    init_y = np.repeat(np.arange(5), 20)
    init_x = centers[init_y] * 0.7 + 0.5 * np.random.default_rng(3).normal(size=(100, 16))
    kw = dict(init_features=init_x, init_labels=init_y, head_threshold=0.1, progress=False)
    table, curve = evaluate_fluid(x, stream, [16, 2], model="MRL", points=20, **kw)
    assert table["truncate_dim"].unique().tolist() == [2, 16]
    full = table[table["truncate_dim"] == 16].set_index("category")
    assert full.loc["overall", "accuracy"] > 0.7
    preds = fluid_predictions(
        x, stream, [2, 16], init_features=init_x, init_labels=init_y, progress=False
    )
    want = fluid_accuracy(preds, stream, [2, 16], head_threshold=0.1, model="MRL")
    pd.testing.assert_frame_equal(table, want)
    assert curve["accuracy"].dropna().between(0, 1).all()


def test_category_intervals_bootstrap_the_stream_samples():
    rng = np.random.default_rng(5)
    n, n_classes = 600, 6
    labels = rng.choice(n_classes, n, p=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    stream = FluidStream(np.arange(n), labels, [0, 1, 2], [3, 4, 5])
    # Two sizes; the larger one right more often, class 5 always wrong.
    preds = np.stack([labels, labels])
    preds[0, rng.random(n) < 0.4] = -1
    preds[1, rng.random(n) < 0.2] = -1
    preds[:, labels == 5] = -1
    acc = fluid_accuracy(preds, stream, [4, 8], head_threshold=50, n_boot=2000, seed=1)
    measured = acc.dropna(subset=["accuracy"])  # pretrain-tail has no class here
    assert set(acc["category"]) - set(measured["category"]) == {"pretrain-tail"}
    assert (measured["ci_low"] <= measured["accuracy"]).all()
    assert (measured["accuracy"] <= measured["ci_high"]).all()

    # A literal bootstrap: resample the stream's samples, recompute every category.
    table = stream.class_table(50)
    draws = rng.integers(0, n, size=(2000, n))
    right = preds[:, draws] == labels[draws]  # [G, B, n]
    onehot = labels[draws][..., None] == np.arange(n_classes)  # [B, n, C]
    hits = np.einsum("gbn,bnc->gbc", right.astype(float), onehot.astype(float))
    seen = onehot.sum(axis=1)  # [B, C]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = hits / seen
    for category in ("pretrain-head", "novel-tail", "mean-per-class", "overall"):
        if category == "overall":
            reps = right.mean(axis=2)
        else:
            mask = (
                (table["count"] > 0)
                if category == "mean-per-class"
                else table["category"] == category
            ).to_numpy()
            reps = np.nanmean(per_class[..., mask], axis=2)
        low, high = np.percentile(reps, [2.5, 97.5], axis=1)
        got = acc[acc["category"] == category].sort_values("truncate_dim")
        np.testing.assert_allclose(got["ci_low"], low, atol=0.015)
        np.testing.assert_allclose(got["ci_high"], high, atol=0.015)
    # Class 5 is never right: with a head threshold above class 4's count it is the only
    # novel-tail class, 0 in every resample that has it.
    alone = fluid_accuracy(preds, stream, [4, 8], head_threshold=30, n_boot=200)
    tail = alone[alone["category"] == "novel-tail"]
    assert (tail["n_classes"] == 1).all() and (tail[["ci_low", "ci_high"]] == 0).all(axis=None)
