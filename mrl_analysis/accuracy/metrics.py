"""Accuracy per representation size: linear heads, MRL-E interpolation and k-NN (faiss).

Every function takes plain numpy arrays (fetch them from an ``EmbeddingCache``) and returns
a tidy table with one row per model x method x ``truncate_dim`` x metric:

=============  ==============================================================
column         meaning
=============  ==============================================================
model          the name given by the caller (``"MRL"``, ``"MRL-E"``, ``"FF-64"``, ...)
method         ``"linear"``, ``"interpolated"`` (MRL-E shared head at any size),
               ``"first-m"`` (k-NN on the first m features) or a post-hoc
               baseline from :mod:`mrl_analysis.accuracy.baselines` (``"svd"``, ``"jl"``)
truncate_dim   the representation size m
metric         ``"top1"``, ``"top5"``, ... (linear) or ``"1-NN"``, ``"5-NN"``, ... (k-NN)
value          accuracy as a fraction in [0, 1]
label          the legend name (:func:`method_label`), e.g. ``"MRL-E (interpolated)"``
=============  ==============================================================

:func:`mrl_analysis.accuracy.plots.accuracy_figure` plots such a table like the paper's
Figures 2, 3 and 5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mrl_analysis.core.checks import (
    check_features,
    check_finite,
    check_int,
    check_ks,
    check_labels,
    check_scores,
    check_sizes,
)
from mrl_analysis.core.kinds import model_display_name

COLUMNS = ["model", "method", "truncate_dim", "metric", "value", "label"]
BASELINE_NAMES = {"first-m": "Rand. FS", "svd": "SVD", "jl": "JL"}

# Elements of one [G, n, C] block of logits handled at once: bounds the temporaries of the
# rank computation to a few hundred MB whatever the dataset size.
_BLOCK_ELEMENTS = 1 << 24


def method_label(model: str | None, method: str, *, baseline: bool = False) -> str:
    """Legend name of a (model, method) pair, as in the paper's figures.

    ``("MRL", "linear")`` -> ``"MRL"``; ``("mrl-e", "interpolated")`` ->
    ``"MRL-E (interpolated)"``; ``("FF-2048", "svd")`` -> ``"FF SVD"``. ``"first-m"`` is a
    model's own nested truncation unless ``baseline=True``, where it is the paper's random
    feature selection (``"FF Rand. FS"``).
    """
    base = model_display_name(model)
    if method in ("svd", "jl") or (baseline and method in BASELINE_NAMES):
        suffix = BASELINE_NAMES[method]
        return f"{base} {suffix}".strip()
    if method == "interpolated":
        return f"{base} (interpolated)".strip()
    return base or method


def _table(
    model: str | None,
    method: str,
    sizes: Sequence[int],
    metrics: Sequence[str],
    hits: np.ndarray,
    n: int,
    label: str,
) -> pd.DataFrame:
    """The tidy table of ``hits [len(sizes), len(metrics)]`` correct samples out of ``n``."""
    table = pd.DataFrame(
        {
            "model": model,
            "method": method,
            "truncate_dim": np.repeat(np.asarray(sizes, dtype=int), len(metrics)),
            "metric": np.tile(np.asarray(metrics, dtype=object), len(sizes)),
            "value": (hits / n).ravel().astype(float),
            "label": label,
        },
        columns=COLUMNS,
    )
    return table


# --------------------------------------------------------------------------- linear


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of the true class in each row of ``scores [..., N, C]`` (0 = predicted).

    Equal scores rank by class index, as ``np.argmax`` and a stable descending sort do, so
    "top-k correct" is exactly ``rank < k``. One comparison pass over the scores: unlike
    an argsort/argpartition it needs no ``[..., N, C]`` integer index array.
    """
    lab = labels[:, None]
    true = np.take_along_axis(scores, np.broadcast_to(lab, scores.shape[:-1] + (1,)), axis=-1)
    above = (scores > true).sum(axis=-1)
    tied_before = ((scores == true) & (np.arange(scores.shape[-1]) < lab)).sum(axis=-1)
    return above + tied_before


def linear_accuracy(
    logits: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    topk: int | Iterable[int] = (1, 5),
    model: str | None = None,
) -> pd.DataFrame:
    """Top-k accuracy of each nesting size's linear head from stacked logits.

    ``logits`` is ``[G, N, C]`` with ``G = len(nesting)`` (``cache.logits()``; an FF-k model
    has ``G = 1`` and ``nesting = [k]``), ``labels`` is ``[N]``. Rows:
    ``method="linear"``, ``metric="top1"``, ``"top5"``, ...
    """
    # Finiteness is checked block by block below, so a memory-mapped cache is read once.
    logits, labels, sizes = check_scores(logits, labels, nesting, "logits", finite=False)
    g, n, c = logits.shape
    ks = check_ks(topk, c, "topk", f"the number of classes is {c}")
    hits = np.zeros((g, len(ks)), dtype=np.int64)
    step = max(1, _BLOCK_ELEMENTS // (g * c))
    starts = range(0, n, step)
    for start in tqdm(starts, desc="linear accuracy", leave=False, disable=len(starts) < 4):
        block = check_finite(np.asarray(logits[:, start : start + step]), "logits")
        ranks = label_ranks(block, labels[start : start + step])
        hits += (ranks[:, :, None] < np.asarray(ks)).sum(axis=1)
    metrics = [f"top{k}" for k in ks]
    return _table(model, "linear", sizes, metrics, hits, n, method_label(model, "linear"))


def interpolation_sizes(nesting: Sequence[int], steps: int = 1) -> list[int]:
    """The trained sizes plus ``steps`` evenly spaced sizes between each consecutive pair.

    ``steps=1`` gives the paper's interpolated sizes (12, 24, 48, ... between 8, 16, 32,
    ...); for a dense curve pass e.g. ``range(1, d + 1)`` to the interpolation directly.

    >>> interpolation_sizes([8, 16, 32])
    [8, 12, 16, 24, 32]
    """
    sizes = sorted({int(m) for m in nesting})
    if not sizes:
        raise ValueError("nesting is empty: give the trained sizes, e.g. cache.nesting")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = set(sizes)
    for a, b in zip(sizes, sizes[1:], strict=False):
        out.update(round(a + (b - a) * i / (steps + 1)) for i in range(1, steps + 1))
    return sorted(out)


def mrl_e_interpolated_accuracy(
    features: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    labels: np.ndarray,
    sizes: Iterable[int],
    topk: int | Iterable[int] = (1, 5),
    model: str | None = "MRL-E",
    *,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Top-k accuracy of an MRL-E shared head at any sizes (paper Fig. 5, Table 5).

    The logits at size m are ``features[:, :m] @ weight[:, :m].T + bias`` (the head is the
    model's ``fc.nesting_classifier_0``: ``weight [C, d]``, ``bias [C]``). Sizes are
    visited in increasing order and each adds only its new columns to the previous logits,
    so a dense grid of sizes costs one ``N x d x C`` product in all. Accumulation is in
    float64. Rows: ``method="interpolated"``, ``metric="top1"``, ...
    """
    features = check_features(features, "features")
    weight = check_features(weight, "weight")
    n, d = features.shape
    c = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(
            f"weight is [C, d] = {weight.shape} but features have d = {d}; pass the MRL-E "
            "head's full weight (fc.nesting_classifier_0.weight)"
        )
    bias = check_finite(np.asarray(bias), "bias")
    if bias.shape != (c,):
        raise ValueError(f"bias must have shape ({c},) to match weight, got {bias.shape}")
    if n == 0:
        raise ValueError("features hold no samples (N = 0)")
    labels = check_labels(labels, n, num_classes=c)
    sizes = check_sizes(sizes, d)
    ks = check_ks(topk, c, "topk", f"the number of classes is {c}")
    # [d, C] so that each size's new rows are one contiguous block for BLAS.
    weight_t = np.ascontiguousarray(weight.T, dtype=np.float64)
    bias64 = bias.astype(np.float64)
    hits = np.zeros((len(sizes), len(ks)), dtype=np.int64)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="MRL-E interpolation", leave=False, disable=len(starts) < 4):
        feats = features[start : start + batch_size].astype(np.float64)
        lab = labels[start : start + batch_size]
        logits = np.broadcast_to(bias64, (feats.shape[0], c)).copy()
        done = 0
        for i, m in enumerate(sizes):
            logits += feats[:, done:m] @ weight_t[done:m]
            done = m
            hits[i] += (label_ranks(logits, lab)[:, None] < np.asarray(ks)).sum(axis=0)
    metrics = [f"top{k}" for k in ks]
    label = method_label(model, "interpolated")
    return _table(model, "interpolated", sizes, metrics, hits, n, label)


# --------------------------------------------------------------------------- k-NN


def knn_vote(neighbor_labels: np.ndarray) -> np.ndarray:
    """Majority class of each row of ``neighbor_labels [Q, k]`` (nearest first).

    A tie between classes goes to the one whose nearest member comes first. Vectorized:
    each neighbour counts how many of the k agree with it, and the first neighbour with the
    largest count names the class.
    """
    if neighbor_labels.shape[1] == 1:
        return neighbor_labels[:, 0]
    agree = (neighbor_labels[:, :, None] == neighbor_labels[:, None, :]).sum(axis=2)
    winner = agree.argmax(axis=1)
    return np.take_along_axis(neighbor_labels, winner[:, None], axis=1)[:, 0]


def _truncated(x: np.ndarray, m: int, normalize: bool) -> np.ndarray:
    # Always a fresh C-contiguous float32 copy: faiss needs that layout and
    # normalize_L2 works in place, which must never touch the caller's arrays.
    out = np.array(x[:, :m], dtype=np.float32, order="C", copy=True)
    if normalize:
        faiss.normalize_L2(out)
    return out


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    sizes: Iterable[int],
    *,
    k: int | Iterable[int] = (1,),
    normalize: bool = True,
    model: str | None = None,
    method: str = "first-m",
    batch_size: int = 8192,
    label: str | None = None,
) -> pd.DataFrame:
    """k-NN classification accuracy on the first m features, for each m in ``sizes``.

    For each m the train (database) and test (query) features are truncated to their first
    m columns, L2-normalized after truncation (``normalize=True``, as the authors do), and
    searched exactly with ``faiss.IndexFlatL2``. The prediction is the majority label of
    the k nearest train samples, ties going to the class of the nearest neighbour
    (:func:`knn_vote`). Rows: ``metric="1-NN"``, ``"5-NN"``, ...; ``method`` and ``label``
    are written as given (``label`` defaults to :func:`method_label`).

    At m = 1 every normalized vector is +-1, so 1-NN degenerates into ties; the paper starts
    at m = 8.
    """
    train_features = check_features(train_features, "train_features")
    test_features = check_features(test_features, "test_features")
    n_train, d = train_features.shape
    n_test = test_features.shape[0]
    if test_features.shape[1] != d:
        raise ValueError(
            f"train_features have d = {d} but test_features have d = "
            f"{test_features.shape[1]}; embed both with the same model"
        )
    if n_train == 0 or n_test == 0:
        raise ValueError(f"need train and test samples, got {n_train} and {n_test}")
    train_labels = check_labels(train_labels, n_train, "train_labels")
    test_labels = check_labels(test_labels, n_test, "test_labels")
    sizes = check_sizes(sizes, d)
    ks = check_ks(k, n_train, "k", f"the number of train samples is {n_train}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    kmax = ks[-1]
    hits = np.zeros((len(sizes), len(ks)), dtype=np.int64)
    starts = range(0, n_test, batch_size)
    with tqdm(total=len(sizes) * len(starts), desc=f"{kmax}-NN", leave=False) as bar:
        for i, m in enumerate(sizes):
            index = faiss.IndexFlatL2(m)
            index.add(_truncated(train_features, m, normalize))
            for start in starts:
                queries = _truncated(test_features[start : start + batch_size], m, normalize)
                _, neighbors = index.search(queries, kmax)
                neighbor_labels = train_labels[neighbors]
                truth = test_labels[start : start + batch_size]
                for j, kk in enumerate(ks):
                    hits[i, j] += np.count_nonzero(knn_vote(neighbor_labels[:, :kk]) == truth)
                bar.update()
    name = label if label is not None else method_label(model, method)
    return _table(model, method, sizes, [f"{kk}-NN" for kk in ks], hits, n_test, name)
