"""FLUID: online nearest-class-mean learning on a long-tailed stream (Wallingford et al. 2020;
paper Appendix G, Table 16). Streams and their categories: :mod:`mrl_analysis.fewshot.stream`.

At each step the learner predicts the sample's class, then sees the label and updates. The
learner is an online NCM on the frozen features truncated to m, with the conventions of
:mod:`mrl_analysis.fewshot.ncm` (L2-normalize after truncation; a class mean averages
normalized samples; cosine or Euclidean scores; ties to the smallest class label):

* a pretrain class starts known, its sum and count initialised from training features
  (``init_features``, ``init_labels``); stream samples then update that running mean;
* a novel class is unknown, hence never predicted, until its first labelled sample;
* a step with no class known yet predicts ``-1`` (always wrong).

Accuracies (fractions in [0, 1]): ``pretrain-head``, ``novel-head``, ``pretrain-tail`` and
``novel-tail`` average per-class accuracies over the classes of the category (as long-tail
benchmarks do), ``mean-per-class`` over all classes in the stream, ``overall`` is the
accuracy over all samples. Each comes with a percentile bootstrap interval over the stream's
samples (``ci_low``, ``ci_high``; resamples shared by every size and category, see
:mod:`mrl_analysis.core.stats`): it measures how much the score depends on which samples
were evaluated, for the learner's predictions on this stream (a tail class with three
samples gets a wide interval); drawing other streams (seeds) varies the learning too.

Vectorization: the prediction at step t needs the class means after steps < t. The stream
is processed in blocks of B steps; with the normalized block features X, the sums S before
the block and the one-hot labels Y, the score inputs of every step of the block are

* ``q_t . sum_c(t) = (X S^T)[t, c] + (tril(X X^T, -1) Y)[t, c]`` and
* ``||sum_c(t)||^2``, the norm before the block plus an exclusive cumulative sum of the
  increments ``2 q_t . sum_{y_t}(t) + ||q_t||^2`` of the steps before t,

so one block costs ``B (C + B) m`` multiply-adds and gives exactly the step-by-step
predictions. Means are never materialised per step (that would be ``B x C x m``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mrl_analysis.core.checks import (
    check_features,
    check_int,
    check_labels,
    check_nesting,
    check_sizes,
)
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.stats import LEVEL, N_BOOT, bootstrap_means
from mrl_analysis.fewshot.ncm import Metric, check_metric, prefix_norms, safe_norms, single_threaded
from mrl_analysis.fewshot.stream import FluidStream

CATEGORIES: tuple[str, ...] = (
    "pretrain-head",
    "novel-head",
    "pretrain-tail",
    "novel-tail",
    "mean-per-class",
    "overall",
)
GROUPS: tuple[str, ...] = ("all", "pretrain", "novel")
ACCURACY_COLUMNS = [
    "model",
    "truncate_dim",
    "category",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_classes",
    "n_samples",
]
CURVE_COLUMNS = ["model", "truncate_dim", "group", "step", "accuracy", "window_accuracy"]

# Rows of training features normalized at once when initialising the pretrain sums.
_INIT_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------- learner


def _one_hot(labels: np.ndarray, n_classes: int) -> sp.csr_matrix:
    """Sparse ``[n_classes, len(labels)]`` indicator: ``Y^T`` products cost O(len * m)."""
    n = labels.shape[0]
    return sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(n_classes, n))


def _initial_sums(
    init_features: np.ndarray | None,
    init_labels: np.ndarray | None,
    stream: FluidStream,
    sizes: list[int],
) -> tuple[list[np.ndarray], np.ndarray]:
    classes = stream.classes
    sums = [np.zeros((classes.size, m)) for m in sizes]
    counts = np.zeros(classes.size)
    if init_features is None and init_labels is None:
        return sums, counts
    if init_features is None or init_labels is None:
        raise ValueError("give both init_features and init_labels, or neither")
    x = check_features(init_features, "init_features")
    if x.shape[1] < sizes[-1]:
        raise ValueError(
            f"init_features have d = {x.shape[1]} < {sizes[-1]}; embed them with the same model"
        )
    y = check_labels(init_labels, x.shape[0], "init_labels")
    keep = np.flatnonzero(np.isin(y, stream.pretrain_classes))
    missing = np.setdiff1d(stream.pretrain_classes, y[keep])
    if missing.size:
        raise ValueError(
            f"pretrain classes {missing.tolist()[:10]} have no init samples; pass training "
            "features of every pretrain class (other classes' samples are ignored)"
        )
    rows = max(1, _INIT_ELEMENTS // sizes[-1])
    for lo in range(0, keep.size, rows):
        part = keep[lo : lo + rows]
        xb = np.asarray(x[part, : sizes[-1]], dtype=np.float64)
        norms = safe_norms(prefix_norms(xb, sizes))
        onehot = _one_hot(np.searchsorted(classes, y[part]), classes.size)
        for g, m in enumerate(sizes):
            sums[g] += onehot @ (xb[:, :m] / norms[g][:, None])
    counts += np.bincount(np.searchsorted(classes, y[keep]), minlength=classes.size)
    return sums, counts


def fluid_predictions(
    features: np.ndarray,
    stream: FluidStream,
    nesting: Sequence[int],
    *,
    init_features: np.ndarray | None = None,
    init_labels: np.ndarray | None = None,
    metric: Metric = "cosine",
    block_size: int = 128,
    model: str = "model",
    progress: bool = True,
) -> np.ndarray:
    """Predicted class of every stream step at every size: int64 ``[len(nesting), N]``.

    ``features`` is the pool the stream indexes (``stream.indices``); ``init_features`` /
    ``init_labels`` are training features whose pretrain-class samples initialise the
    pretrain means (other classes are ignored). Predictions equal the step-by-step
    definition (module docstring). The matrix products run in the precision of
    ``features`` (float32 from a cache: ~3x faster; float64 gives the literal loop's
    predictions to the last tie); class sums and norms are always accumulated in float64.
    ``model`` names the progress bar.
    """
    x = check_features(features)
    sizes = check_sizes(nesting, x.shape[1], "nesting")
    check_metric(metric)
    block_size = check_int(block_size, "block_size", low=1)
    if len(stream) and stream.indices.max() >= x.shape[0]:
        raise ValueError(
            f"stream indexes row {stream.indices.max()} but features have {x.shape[0]} rows; "
            "pass the pool the stream was drawn from"
        )
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    classes = stream.classes
    target = np.searchsorted(classes, stream.labels)
    with single_threaded():
        sums, counts = _initial_sums(init_features, init_labels, stream, sizes)
        sq = [np.einsum("cm,cm->c", s, s) for s in sums]
        preds = np.empty((len(sizes), len(stream)), dtype=np.int64)
        starts = range(0, len(stream), block_size)
        bar = progress_bar(
            starts, desc=f"FLUID stream · {model}", unit="block", disable=not progress
        )
        for lo in bar:
            block = slice(lo, lo + block_size)
            xb = np.asarray(x[stream.indices[block], : sizes[-1]], dtype=dtype)
            preds[:, block] = _predict_block(
                xb, target[block], sums, sq, counts, classes, sizes, metric
            )
    return preds


def _predict_block(
    xb: np.ndarray,
    yb: np.ndarray,
    sums: list[np.ndarray],
    sq: list[np.ndarray],
    counts: np.ndarray,
    classes: np.ndarray,
    sizes: list[int],
    metric: str,
) -> np.ndarray:
    """Predictions ``[G, B]`` for one block; updates ``sums``, ``sq``, ``counts`` in place."""
    b, n_classes, dtype = yb.size, classes.size, xb.dtype
    steps = np.arange(b)
    divisor = safe_norms(prefix_norms(xb, sizes)).astype(dtype)
    onehot = _one_hot(yb, n_classes)  # Y^T
    dense = np.zeros((b, n_classes))
    dense[steps, yb] = 1.0
    seen = counts + np.cumsum(dense, axis=0) - dense  # counts before each step
    known = seen > 0
    any_known = known.any(axis=1)
    preds = np.empty((len(sizes), b), dtype=np.int64)
    for g, m in enumerate(sizes):
        xm = xb[:, :m] / divisor[g][:, None]
        gram = xm @ xm.T
        own = np.diagonal(gram).astype(np.float64)  # ||q_t||^2: 1, or 0 if x = 0
        within = np.tril(gram, -1)  # q_t . q_s for s < t
        dot = xm @ sums[g].T.astype(dtype) + (onehot @ within.T).T  # q_t . sum_c(t)
        dot = dot.astype(np.float64, copy=False)
        step_inc = 2.0 * dot[steps, yb] + own
        inc = dense * step_inc[:, None]
        norm2 = sq[g] + np.cumsum(inc, axis=0) - inc
        scores = _scores(dot, norm2, seen, metric)
        scores[~known] = -np.inf
        preds[g] = np.where(any_known, classes[scores.argmax(axis=1)], -1)
        sums[g] += onehot @ xm
        # Recomputed rather than carried over so rounding never accumulates across blocks.
        sq[g] = np.einsum("cm,cm->c", sums[g], sums[g])
    counts += np.bincount(yb, minlength=n_classes)
    return preds


def _scores(dot: np.ndarray, norm2: np.ndarray, seen: np.ndarray, metric: str) -> np.ndarray:
    """Cosine ``q . mu / ||mu||`` or ``2 q . mu - ||mu||^2`` (= -||q - mu||^2 + const)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "cosine":
            norm = np.sqrt(np.maximum(norm2, 0.0))
            return np.where(norm > 0, dot / norm, 0.0)
        return np.where(seen > 0, 2.0 * dot / seen - norm2 / seen**2, 0.0)


# --------------------------------------------------------------------------- tables


def _check_predictions(
    predictions: np.ndarray, stream: FluidStream, nesting: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
    """Predictions and their sizes: ``nesting`` names the rows of ``predictions``, as
    :func:`fluid_predictions` orders them (sorted)."""
    preds = np.asarray(predictions)
    sizes = check_nesting(nesting)
    if preds.shape != (len(sizes), len(stream)):
        raise ValueError(
            f"predictions have shape {preds.shape}, expected (len(nesting), len(stream)) = "
            f"({len(sizes)}, {len(stream)}); pass the output of fluid_predictions"
        )
    return preds, sizes


def _category_masks(table: pd.DataFrame, present: np.ndarray) -> dict[str, np.ndarray | None]:
    """Classes averaged by each category; ``None`` for ``overall`` (a mean over samples)."""
    masks: dict[str, np.ndarray | None] = {}
    for category in CATEGORIES:
        if category == "overall":
            masks[category] = None
        elif category == "mean-per-class":
            masks[category] = present
        else:
            masks[category] = np.asarray(table["category"] == category)
    return masks


def _bootstrap_categories(
    correct: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    masks: dict[str, np.ndarray | None],
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bootstrap interval ``(low [G], high [G])`` of every category over the stream samples.

    Per-class hit rates are ratios of two sample means (hits of a class, its share of the
    stream), so one shared-resample bootstrap of the rows ``hits[g, c]``, ``share[c]`` and
    ``correct[g]`` gives every category's replicates; a class a replicate happens to leave
    out drops out of that replicate's average.
    """
    g_count, n = correct.shape
    share = np.zeros((n_classes, n))
    share[target, np.arange(n)] = 1.0
    hits = (correct[:, None, :] * share[None]).reshape(g_count * n_classes, n)
    boot = bootstrap_means(np.concatenate([hits, share, correct]), n_boot, level=level, seed=seed)
    reps = boot.replicates
    rep_hits = reps[: g_count * n_classes].reshape(g_count, n_classes, -1)
    rep_share = reps[g_count * n_classes : (g_count + 1) * n_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(rep_share > 0, rep_hits / rep_share, np.nan)  # [G, C, B]
    tail = 100 * (1 - level) / 2
    out = {}
    for category, mask in masks.items():
        if mask is None:
            values = reps[-g_count:]
        elif not mask.any():
            continue
        else:
            part = per_class[:, mask]
            seen = np.isfinite(part).sum(axis=1)
            values = np.where(seen > 0, np.nansum(part, axis=1) / np.maximum(seen, 1), np.nan)
        with np.errstate(invalid="ignore"):
            low, high = np.nanpercentile(values, [tail, 100 - tail], axis=-1)
        out[category] = (low, high)
    return out


def fluid_accuracy(
    predictions: np.ndarray,
    stream: FluidStream,
    nesting: Sequence[int],
    *,
    head_threshold: float = 50,
    model: str = "model",
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy per category and size (Table 16): columns ``model, truncate_dim,
    category, accuracy, ci_low, ci_high, n_classes, n_samples``; a category without classes
    has NaN. The interval bootstraps the stream's samples (``n_boot`` resamples at
    ``level``, seeded by ``seed``; module docstring)."""
    preds, sizes = _check_predictions(predictions, stream, nesting)
    table = stream.class_table(head_threshold)
    classes = stream.classes
    target = np.searchsorted(classes, stream.labels)
    correct = (preds == stream.labels).astype(np.float64)
    counts = table["count"].to_numpy()
    present = counts > 0
    masks = _category_masks(table, present)
    nan = np.full(len(sizes), np.nan)
    intervals = (
        _bootstrap_categories(correct, target, classes.size, masks, n_boot, level, seed)
        if len(stream)
        else {}
    )
    hits = np.stack([np.bincount(target, weights=c, minlength=classes.size) for c in correct])
    per_class = np.divide(
        hits, counts, out=np.full(hits.shape, np.nan), where=present[None, :]
    )  # [G, C]
    stats = {}
    for category, mask in masks.items():
        if mask is None:
            mask, values = present, correct.mean(axis=1) if len(stream) else nan
        else:
            values = per_class[:, mask].mean(axis=1) if mask.any() else nan
        stats[category] = (mask, values, *intervals.get(category, (nan, nan)))
    rows = [
        {
            "model": model,
            "truncate_dim": m,
            "category": category,
            "accuracy": values[g],
            "ci_low": low[g],
            "ci_high": high[g],
            "n_classes": int(mask.sum()),
            "n_samples": int(counts[mask].sum()),
        }
        for g, m in enumerate(sizes)
        for category, (mask, values, low, high) in stats.items()
    ]
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def fluid_learning_curve(
    predictions: np.ndarray,
    stream: FluidStream,
    nesting: Sequence[int],
    *,
    points: int = 200,
    window: int | None = None,
    model: str = "model",
) -> pd.DataFrame:
    """Accuracy over the stream at ``points`` evenly spaced steps, per size and group.

    ``group`` is ``all``, ``pretrain`` or ``novel`` (samples of those classes); ``step`` is
    the number of samples seen; ``accuracy`` is cumulative up to ``step``,
    ``window_accuracy`` over the last ``window`` steps (default: 5% of the stream). Both are
    NaN where the group has no sample yet.
    """
    preds, sizes = _check_predictions(predictions, stream, nesting)
    n = len(stream)
    if n == 0:
        raise ValueError("the stream is empty")
    points = check_int(points, "points", low=1)
    window = max(1, n // 20) if window is None else check_int(window, "window", low=1)
    steps = np.unique(np.linspace(1, n, min(points, n)).round().astype(np.int64))
    correct = (preds == stream.labels).astype(np.float64)
    is_pretrain = np.isin(stream.labels, stream.pretrain_classes)
    masks = {"all": np.ones(n, dtype=bool), "pretrain": is_pretrain, "novel": ~is_pretrain}
    frames = []
    for group, mask in masks.items():
        seen = np.concatenate([[0], np.cumsum(mask)])
        hits = np.concatenate([np.zeros((len(preds), 1)), np.cumsum(correct * mask, 1)], 1)
        lo = np.maximum(steps - window, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cumulative = hits[:, steps] / seen[steps]
            windowed = (hits[:, steps] - hits[:, lo]) / (seen[steps] - seen[lo])
        for g, m in enumerate(sizes):
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "truncate_dim": m,
                        "group": group,
                        "step": steps,
                        "accuracy": cumulative[g],
                        "window_accuracy": windowed[g],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]


def evaluate_fluid(
    features: np.ndarray,
    stream: FluidStream,
    nesting: Sequence[int],
    *,
    init_features: np.ndarray | None = None,
    init_labels: np.ndarray | None = None,
    head_threshold: float = 50,
    metric: Metric = "cosine",
    model: str = "model",
    points: int = 200,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`fluid_predictions`, then the category table (with its bootstrap intervals)
    and the learning curves."""
    sizes = check_sizes(nesting, np.shape(features)[-1], "nesting")
    preds = fluid_predictions(
        features,
        stream,
        sizes,
        init_features=init_features,
        init_labels=init_labels,
        metric=metric,
        model=model,
        progress=progress,
    )
    return (
        fluid_accuracy(
            preds,
            stream,
            sizes,
            head_threshold=head_threshold,
            model=model,
            n_boot=n_boot,
            level=level,
            seed=seed,
        ),
        fluid_learning_curve(preds, stream, sizes, points=points, model=model),
    )
