"""Accuracy per representation size: linear heads, MRL-E interpolation and k-NN (faiss).

Every function takes plain numpy arrays (fetch them from an ``EmbeddingCache``). The
``*_outcomes`` functions return :class:`Outcomes`, the per-sample correctness behind the
numbers (for paired tests between sizes); the ``*_accuracy`` functions return its tidy
table, one row per model x method x ``truncate_dim`` x metric:

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
ci_low/high    its bootstrap interval over the eval samples (95% by default; the
               resamples are shared by every row over the same samples, see
               :mod:`mrl_analysis.core.stats`)
label          the legend name (:func:`method_label`), e.g. ``"MRL-E (interpolated)"``
=============  ==============================================================

:func:`mrl_analysis.accuracy.plots.accuracy_figure` plots such a table like the paper's
Figures 2, 3 and 5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd

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
from mrl_analysis.core.progress import progress
from mrl_analysis.core.stats import N_BOOT, bootstrap_means

COLUMNS = ["model", "method", "truncate_dim", "metric", "value", "ci_low", "ci_high", "label"]
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


@dataclass(frozen=True)
class Outcomes:
    """Per-sample correctness of one model (or baseline) at several sizes and metrics.

    ``correct[g, j, i]``: is sample ``i`` right at size ``sizes[g]`` under ``metrics[j]``
    (``"top1"``, ``"1-NN"``, ...). Tables, paired tests between sizes and intervals of
    derived statistics are all computed from it.
    """

    model: str | None
    method: str
    label: str
    sizes: list[int]
    metrics: list[str]
    correct: np.ndarray

    def at(self, metric: str) -> np.ndarray:
        """Correctness ``bool [G, N]`` under ``metric``."""
        if metric not in self.metrics:
            raise ValueError(f"no metric {metric!r} here; there are {self.metrics}")
        return self.correct[:, self.metrics.index(metric)]

    def table(self, n_boot: int = N_BOOT) -> pd.DataFrame:
        """The tidy table (:data:`COLUMNS`): accuracy per size × metric with its bootstrap
        interval over the samples (``n_boot`` resamples, seed 0: shared by every table
        over the same samples)."""
        g, k, n = self.correct.shape
        boot = bootstrap_means(self.correct.reshape(g * k, n), n_boot)
        low, high = boot.interval()
        return pd.DataFrame(
            {
                "model": self.model,
                "method": self.method,
                "truncate_dim": np.repeat(np.asarray(self.sizes, dtype=int), k),
                "metric": np.tile(np.asarray(self.metrics, dtype=object), g),
                "value": boot.mean,
                "ci_low": low,
                "ci_high": high,
                "label": self.label,
            },
            columns=COLUMNS,
        )


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


def linear_outcomes(
    logits: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    topk: int | Iterable[int] = (1, 5),
    model: str | None = None,
) -> Outcomes:
    """Top-k correctness of each nesting size's linear head from stacked logits.

    ``logits`` is ``[G, N, C]`` with ``G = len(nesting)`` (``cache.logits()``; an FF-k model
    has ``G = 1`` and ``nesting = [k]``), ``labels`` is ``[N]``; NaN / inf logits are
    refused. ``method="linear"``,
    metrics ``"top1"``, ``"top5"``, ...
    """
    # Finiteness is checked block by block below, so a memory-mapped cache is read once.
    logits, labels, sizes = check_scores(logits, labels, nesting, "logits", finite=False)
    g, n, c = logits.shape
    ks = check_ks(topk, c, "topk", f"the number of classes is {c}")
    correct = np.empty((g, len(ks), n), dtype=bool)
    step = max(1, _BLOCK_ELEMENTS // (g * c))
    starts = range(0, n, step)
    desc = f"linear accuracy · {model or 'model'}"
    for start in progress(starts, desc=desc, unit="block", disable=len(starts) < 4):
        block = check_finite(np.asarray(logits[:, start : start + step]), "logits")
        ranks = label_ranks(block, labels[start : start + step])
        correct[:, :, start : start + step] = ranks[:, None, :] < np.asarray(ks)[:, None]
    metrics = [f"top{k}" for k in ks]
    return Outcomes(model, "linear", method_label(model, "linear"), sizes, metrics, correct)


def linear_accuracy(
    logits: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    topk: int | Iterable[int] = (1, 5),
    model: str | None = None,
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Top-k accuracy with bootstrap intervals of each nesting size's linear head: the
    table of :func:`linear_outcomes` (``n_boot`` resamples). Rows: ``method="linear"``,
    ``metric="top1"``, ``"top5"``, ..."""
    return linear_outcomes(logits, labels, nesting, topk=topk, model=model).table(n_boot)


def interpolation_sizes(nesting: Sequence[int], steps: int = 1) -> list[int]:
    """The trained sizes plus ``steps`` evenly spaced sizes between each consecutive pair.

    ``steps=1`` gives the paper's interpolated sizes (12, 24, 48, ... between 8, 16, 32,
    ...); for a dense curve pass e.g. ``range(1, d + 1)`` to the interpolation directly.

    >>> interpolation_sizes([8, 16, 32])
    [8, 12, 16, 24, 32]
    """
    sizes = sorted({check_int(m, "nesting entry", low=1) for m in nesting})
    if not sizes:
        raise ValueError("nesting is empty: give the trained sizes, e.g. cache.nesting")
    steps = check_int(steps, "steps", low=0)
    out = set(sizes)
    for a, b in zip(sizes, sizes[1:], strict=False):
        out.update(round(a + (b - a) * i / (steps + 1)) for i in range(1, steps + 1))
    return sorted(out)


def mrl_e_interpolated_outcomes(
    features: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    labels: np.ndarray,
    sizes: Iterable[int],
    topk: int | Iterable[int] = (1, 5),
    model: str | None = "MRL-E",
    *,
    batch_size: int = 4096,
) -> Outcomes:
    """Top-k correctness of an MRL-E shared head at any sizes (paper Fig. 5, Table 5).

    The logits at size m are ``features[:, :m] @ weight[:, :m].T + bias`` (the head is the
    model's ``fc.nesting_classifier_0``: ``weight [C, d]``, ``bias [C]``). Sizes are
    visited in increasing order and each adds only its new columns to the previous logits,
    so a dense grid of sizes costs one ``N x d x C`` product in all. Accumulation is in
    float64. ``method="interpolated"``, metrics ``"top1"``, ...; NaN / inf in any input
    is refused.
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
    correct = np.empty((len(sizes), len(ks), n), dtype=bool)
    starts = range(0, n, batch_size)
    desc = f"MRL-E interpolation · {model or 'model'}"
    for start in progress(starts, desc=desc, unit="batch", disable=len(starts) < 4):
        feats = features[start : start + batch_size].astype(np.float64)
        lab = labels[start : start + batch_size]
        logits = np.broadcast_to(bias64, (feats.shape[0], c)).copy()
        done = 0
        for i, m in enumerate(sizes):
            logits += feats[:, done:m] @ weight_t[done:m]
            done = m
            ranks = label_ranks(logits, lab)
            correct[i, :, start : start + batch_size] = ranks[None, :] < np.asarray(ks)[:, None]
    metrics = [f"top{k}" for k in ks]
    label = method_label(model, "interpolated")
    return Outcomes(model, "interpolated", label, sizes, metrics, correct)


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
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """The table of :func:`mrl_e_interpolated_outcomes`, with bootstrap intervals. Rows:
    ``method="interpolated"``, ``metric="top1"``, ..."""
    return mrl_e_interpolated_outcomes(
        features, weight, bias, labels, sizes, topk, model, batch_size=batch_size
    ).table(n_boot)


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


def knn_outcomes(
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
) -> Outcomes:
    """k-NN classification correctness on the first m features, for each m in ``sizes``.

    For each m the train (database) and test (query) features are truncated to their first
    m columns, L2-normalized after truncation (``normalize=True``, as the authors do), and
    searched exactly with ``faiss.IndexFlatL2``. The prediction is the majority label of
    the k nearest train samples, ties going to the class of the nearest neighbour
    (:func:`knn_vote`). Metrics ``"1-NN"``, ``"5-NN"``, ...; ``method`` and ``label``
    are kept as given (``label`` defaults to :func:`method_label`). NaN / inf features are
    refused.

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
    correct = np.empty((len(sizes), len(ks), n_test), dtype=bool)
    starts = range(0, n_test, batch_size)
    name = label if label is not None else method_label(model, method)
    desc = f"{kmax}-NN · {name or 'model'}"
    with progress(total=len(sizes) * len(starts), desc=desc, unit="batch") as bar:
        for i, m in enumerate(sizes):
            index = faiss.IndexFlatL2(m)
            index.add(_truncated(train_features, m, normalize))
            for start in starts:
                queries = _truncated(test_features[start : start + batch_size], m, normalize)
                _, neighbors = index.search(queries, kmax)
                neighbor_labels = train_labels[neighbors]
                truth = test_labels[start : start + batch_size]
                for j, kk in enumerate(ks):
                    correct[i, j, start : start + batch_size] = (
                        knn_vote(neighbor_labels[:, :kk]) == truth
                    )
                bar.update()
    return Outcomes(model, method, name, sizes, [f"{kk}-NN" for kk in ks], correct)


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
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """The table of :func:`knn_outcomes`, with bootstrap intervals over the test samples.
    Rows: ``metric="1-NN"``, ``"5-NN"``, ..."""
    return knn_outcomes(
        train_features,
        train_labels,
        test_features,
        test_labels,
        sizes,
        k=k,
        normalize=normalize,
        model=model,
        method=method,
        batch_size=batch_size,
        label=label,
    ).table(n_boot)
