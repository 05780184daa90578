"""FLUID: online nearest-class-mean learning on a long-tailed stream (Wallingford et al. 2020;
paper Appendix G, Table 16).

A stream of labelled samples mixes *pretrain* classes (the model was trained on them) and
*novel* classes (it never saw them). At each step the learner predicts the sample's class,
then sees the label and updates. The learner is an online NCM on the frozen features
truncated to m, with the conventions of :mod:`mrl_analysis.fewshot.episodes` (L2-normalize after
truncation; a class mean averages normalized samples; cosine or Euclidean scores; ties to
the smallest class label):

* a pretrain class starts known, its sum and count initialised from training features
  (``init_features``, ``init_labels``); stream samples then update that running mean;
* a novel class is unknown, hence never predicted, until its first labelled sample;
* a step with no class known yet predicts ``-1`` (always wrong).

Stream (:func:`make_stream`, seeded): classes get long-tailed frequencies, in a random order
of all classes (pretrain and novel alike may be head or tail):

* ``"zipf"``: the class of random rank r (1-based) has weight ``r ** -alpha``;
* ``"pareto"``: weights are i.i.d. Pareto draws ``1 + numpy.random.Generator.pareto(alpha)``
  (shape ``alpha``, scale 1).

Class counts are the weights times the stream length, rounded by largest remainder; each
class's samples are drawn without replacement from the pool (an evaluation split), and the
stream is a random permutation of them. The default length is the longest stream the pool
allows without capping any class, so the distribution is exact.

Categories (Table 16): a class is *head* when it has more than ``head_threshold`` samples in
the stream (``T = 50`` as in the paper; a value below 1 is a fraction of the stream length,
for small streams), else *tail*. ``pretrain-head``, ``novel-head``, ``pretrain-tail`` and
``novel-tail`` average per-class accuracies over the classes of the category (as long-tail
benchmarks do), ``mean-per-class`` over all classes in the stream, ``overall`` is the
accuracy over all samples.

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
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import scipy.sparse as sp
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from mrl_analysis.accuracy.metrics import model_display_name
from mrl_analysis.fewshot.episodes import (
    Metric,
    check_features,
    check_labels,
    check_metric,
    check_nesting,
    prefix_norms,
    safe_norms,
    single_threaded,
)

Distribution = Literal["zipf", "pareto"]
DISTRIBUTIONS: tuple[str, ...] = ("zipf", "pareto")
CATEGORIES: tuple[str, ...] = (
    "pretrain-head",
    "novel-head",
    "pretrain-tail",
    "novel-tail",
    "mean-per-class",
    "overall",
)
GROUPS: tuple[str, ...] = ("all", "pretrain", "novel")
ACCURACY_COLUMNS = ["model", "truncate_dim", "category", "accuracy", "n_classes", "n_samples"]
CURVE_COLUMNS = ["model", "truncate_dim", "group", "step", "accuracy", "window_accuracy"]

# Rows of training features normalized at once when initialising the pretrain sums.
_INIT_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------- stream


@dataclass(frozen=True, eq=False)
class FluidStream:
    """A FLUID stream: ``indices[t]`` is the pool row shown at step t, of class ``labels[t]``.

    ``pretrain_classes`` and ``novel_classes`` are disjoint and cover every stream label;
    they may include classes with no stream sample (a pretrain class can still be
    predicted). ``distribution``, ``alpha`` and ``seed`` record how it was drawn.
    """

    indices: np.ndarray
    labels: np.ndarray
    pretrain_classes: np.ndarray
    novel_classes: np.ndarray
    distribution: str = "given"
    alpha: float | None = None
    seed: int | None = None
    _counts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got shape {indices.shape}")
        if indices.size and indices.min() < 0:
            raise ValueError("indices must be non-negative rows of the pool features")
        labels = check_labels(self.labels, indices.shape[0], "labels")
        pretrain = np.unique(np.asarray(self.pretrain_classes, dtype=np.int64))
        novel = np.unique(np.asarray(self.novel_classes, dtype=np.int64))
        both = np.intersect1d(pretrain, novel)
        if both.size:
            raise ValueError(
                f"classes {both.tolist()[:10]} are both pretrain and novel; give disjoint lists"
            )
        classes = np.union1d(pretrain, novel)
        stray = np.setdiff1d(labels, classes)
        if stray.size:
            raise ValueError(
                f"stream labels {stray.tolist()[:10]} are neither pretrain nor novel classes; "
                "add them to one of the lists"
            )
        object.__setattr__(self, "indices", indices.astype(np.int64, copy=False))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "pretrain_classes", pretrain)
        object.__setattr__(self, "novel_classes", novel)
        counts = np.bincount(np.searchsorted(classes, labels), minlength=classes.size)
        object.__setattr__(self, "_counts", counts)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def classes(self) -> np.ndarray:
        """All classes (pretrain and novel), sorted: the learner's class order."""
        return np.union1d(self.pretrain_classes, self.novel_classes)

    def class_table(self, head_threshold: float = 50) -> pd.DataFrame:
        """One row per class: ``class``, ``count`` in the stream, ``origin``
        (pretrain / novel), ``part`` (head / tail / absent) and ``category``."""
        threshold = resolve_head_threshold(head_threshold, len(self))
        classes = self.classes
        origin = np.where(np.isin(classes, self.pretrain_classes), "pretrain", "novel")
        part = np.where(self._counts > threshold, "head", "tail")
        part = np.where(self._counts == 0, "absent", part)
        return pd.DataFrame(
            {
                "class": classes,
                "count": self._counts,
                "origin": origin,
                "part": part,
                "category": [f"{o}-{p}" for o, p in zip(origin, part, strict=True)],
            }
        )


def resolve_head_threshold(head_threshold: float, n_samples: int) -> float:
    """``head_threshold`` in samples: values in (0, 1) are a fraction of the stream length."""
    if head_threshold <= 0:
        raise ValueError(f"head_threshold must be > 0, got {head_threshold}")
    return head_threshold * n_samples if head_threshold < 1 else float(head_threshold)


def _class_weights(n_classes: int, distribution: str, alpha: float, rng) -> np.ndarray:
    if distribution == "zipf":
        ranks = rng.permutation(n_classes) + 1
        weights = ranks.astype(np.float64) ** -alpha
    else:
        weights = 1.0 + rng.pareto(alpha, n_classes)
    return weights / weights.sum()


def _largest_remainder(weights: np.ndarray, n: int, cap: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n``, proportional to ``weights``, never above ``cap``."""
    exact = weights * n
    counts = np.minimum(np.floor(exact).astype(np.int64), cap)
    short = n - int(counts.sum())
    if short:
        # Rounding up never takes a class past its cap (float error at n = longest could).
        room = np.where(counts < cap, exact - counts, -np.inf)
        counts[np.argsort(-room, kind="stable")[:short]] += 1
    return counts


def make_stream(
    labels: np.ndarray,
    pretrain_classes: Sequence[int],
    novel_classes: Sequence[int],
    *,
    n_samples: int | None = None,
    distribution: Distribution = "zipf",
    alpha: float = 1.0,
    seed: int = 0,
) -> FluidStream:
    """Draw a seeded long-tailed stream from a pool with ``labels`` (see the module docstring).

    ``n_samples=None`` gives the longest stream the pool allows; a longer request raises,
    naming the class that runs out.
    """
    pool = check_labels(labels)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}: use one of {DISTRIBUTIONS}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    classes = np.union1d(
        np.asarray(pretrain_classes, dtype=np.int64), np.asarray(novel_classes, dtype=np.int64)
    )
    if classes.size == 0:
        raise ValueError("no classes: give pretrain_classes and/or novel_classes")
    available = np.bincount(pool, minlength=classes.max() + 1)[classes]
    if (available == 0).any():
        raise ValueError(
            f"classes {classes[available == 0].tolist()[:10]} have no samples in the pool; "
            "drop them from the class lists or use a split that has them"
        )
    rng = np.random.default_rng(seed)
    weights = _class_weights(classes.size, distribution, alpha, rng)
    longest = int(np.floor((available / weights).min() + 1e-9))
    n = longest if n_samples is None else int(n_samples)
    if not 1 <= n <= longest:
        worst = int(np.argmin(available / weights))
        raise ValueError(
            f"n_samples={n} must lie in 1..{longest}: this {distribution} draw (alpha={alpha}, "
            f"seed={seed}) gives class {classes[worst]} a {weights[worst]:.1%} share, and the "
            f"pool has only {available[worst]} of its samples; use a smaller n_samples or "
            "alpha, or a larger pool"
        )
    counts = _largest_remainder(weights, n, available)
    rows = np.flatnonzero(np.isin(pool, classes))
    # A random order within each class (random keys, then class): the first count_c rows
    # of each class block are a uniform sample without replacement.
    rows = rows[np.lexsort((rng.random(rows.size), pool[rows]))]
    block_start = np.repeat(np.cumsum(available) - available, counts)
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen = rng.permutation(rows[block_start + rank])
    return FluidStream(
        indices=chosen,
        labels=pool[chosen],
        pretrain_classes=np.asarray(pretrain_classes, dtype=np.int64),
        novel_classes=np.asarray(novel_classes, dtype=np.int64),
        distribution=distribution,
        alpha=float(alpha),
        seed=seed,
    )


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
    progress: bool = True,
) -> np.ndarray:
    """Predicted class of every stream step at every size: int64 ``[len(nesting), N]``.

    ``features`` is the pool the stream indexes (``stream.indices``); ``init_features`` /
    ``init_labels`` are training features whose pretrain-class samples initialise the
    pretrain means (other classes are ignored). Predictions equal the step-by-step
    definition (module docstring). The matrix products run in the precision of
    ``features`` (float32 from a cache: ~3x faster; float64 gives the literal loop's
    predictions to the last tie); class sums and norms are always accumulated in float64.
    """
    x = check_features(features)
    sizes = check_nesting(nesting, x.shape[1])
    check_metric(metric)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
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
        for lo in tqdm(starts, desc="FLUID stream", leave=False, disable=not progress):
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
    """Predictions and their sizes, in the (sorted) row order of :func:`fluid_predictions`."""
    preds = np.asarray(predictions)
    sizes = sorted({int(m) for m in nesting})
    if preds.shape != (len(sizes), len(stream)):
        raise ValueError(
            f"predictions have shape {preds.shape}, expected (len(nesting), len(stream)) = "
            f"({len(sizes)}, {len(stream)}); pass the output of fluid_predictions"
        )
    return preds, sizes


def fluid_accuracy(
    predictions: np.ndarray,
    stream: FluidStream,
    nesting: Sequence[int],
    *,
    head_threshold: float = 50,
    model: str = "model",
) -> pd.DataFrame:
    """Accuracy (%) per category and size (Table 16): columns ``model, truncate_dim,
    category, accuracy, n_classes, n_samples``; a category without classes has NaN."""
    preds, sizes = _check_predictions(predictions, stream, nesting)
    table = stream.class_table(head_threshold)
    classes = stream.classes
    target = np.searchsorted(classes, stream.labels)
    correct = preds == stream.labels
    counts = table["count"].to_numpy()
    present = counts > 0
    rows = []
    for g, m in enumerate(sizes):
        hits = np.bincount(target, weights=correct[g], minlength=classes.size)
        per_class = np.divide(hits, counts, out=np.full(classes.size, np.nan), where=present)
        for category in CATEGORIES:
            if category == "overall":
                mask = present
                value = 100.0 * correct[g].mean() if len(stream) else np.nan
            else:
                mask = present if category == "mean-per-class" else table["category"] == category
                mask = np.asarray(mask)
                value = 100.0 * per_class[mask].mean() if mask.any() else np.nan
            rows.append(
                {
                    "model": model,
                    "truncate_dim": m,
                    "category": category,
                    "accuracy": value,
                    "n_classes": int(mask.sum()),
                    "n_samples": int(counts[mask].sum()),
                }
            )
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
    """Accuracy (%) over the stream at ``points`` evenly spaced steps, per size and group.

    ``group`` is ``all``, ``pretrain`` or ``novel`` (samples of those classes); ``step`` is
    the number of samples seen; ``accuracy`` is cumulative up to ``step``,
    ``window_accuracy`` over the last ``window`` steps (default: 5% of the stream). Both are
    NaN where the group has no sample yet.
    """
    preds, sizes = _check_predictions(predictions, stream, nesting)
    n = len(stream)
    if n == 0:
        raise ValueError("the stream is empty")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    window = max(1, n // 20) if window is None else int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
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
            cumulative = 100.0 * hits[:, steps] / seen[steps]
            windowed = 100.0 * (hits[:, steps] - hits[:, lo]) / (seen[steps] - seen[lo])
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
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`fluid_predictions`, then the category table and the learning curves."""
    preds = fluid_predictions(
        features,
        stream,
        nesting,
        init_features=init_features,
        init_labels=init_labels,
        metric=metric,
        progress=progress,
    )
    return (
        fluid_accuracy(preds, stream, nesting, head_threshold=head_threshold, model=model),
        fluid_learning_curve(preds, stream, nesting, points=points, model=model),
    )


# --------------------------------------------------------------------------- figures


def _check_table(table: pd.DataFrame, needed: set[str], source: str) -> pd.DataFrame:
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; pass a table from {source}")
    if table.empty:
        raise ValueError(f"table is empty; pass a table from {source}")
    return table.assign(line=table["model"].map(model_display_name))


def plot_fluid_heatmap(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Accuracy heat-map, size (rows) x category (columns), one panel per model line."""
    data = _check_table(table, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    lines = list(dict.fromkeys(data["line"]))
    sizes = sorted(data["truncate_dim"].unique())
    cats = [c for c in CATEGORIES if c in set(data["category"])]
    fig = make_subplots(rows=1, cols=len(lines), subplot_titles=lines, shared_yaxes=True)
    for col, name in enumerate(lines, start=1):
        grid = (
            data[data["line"] == name]
            .pivot_table(index="truncate_dim", columns="category", values="accuracy")
            .reindex(index=sizes, columns=cats)
        )
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=cats,
                y=[str(m) for m in sizes],
                zmin=0,
                zmax=100,
                colorscale="Viridis",
                text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.1f}")(grid.to_numpy()),
                texttemplate="%{text}",
                colorbar={"title": "Acc. (%)"},
                showscale=col == len(lines),
                hovertemplate="m=%{y}, %{x}: %{z:.2f}%<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="Representation size", type="category", col=1)
    fig.update_layout(
        title=title or "FLUID accuracy per category and size (NCM)", template="plotly_white"
    )
    return fig


def plot_fluid_bars(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars: a panel per category, sizes on x, one bar colour per model line."""
    data = _check_table(table, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    cats = [c for c in CATEGORIES if c in set(data["category"])]
    lines = list(dict.fromkeys(data["line"]))
    sizes = [str(m) for m in sorted(data["truncate_dim"].unique())]
    ncols = min(3, len(cats))
    nrows = -(-len(cats) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=cats, shared_yaxes=True)
    for i, cat in enumerate(cats):
        for li, name in enumerate(lines):
            rows = data[(data["category"] == cat) & (data["line"] == name)]
            rows = rows.sort_values("truncate_dim")
            fig.add_trace(
                go.Bar(
                    x=rows["truncate_dim"].astype(str),
                    y=rows["accuracy"],
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=i == 0,
                    marker_color=qualitative.Plotly[li % len(qualitative.Plotly)],
                ),
                row=i // ncols + 1,
                col=i % ncols + 1,
            )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=sizes)
    fig.update_yaxes(title_text="Accuracy (%)", col=1)
    fig.update_layout(
        barmode="group",
        title=title or "FLUID accuracy per category (NCM)",
        template="plotly_white",
    )
    return fig


def plot_learning_curves(
    curves: pd.DataFrame,
    value: Literal["accuracy", "window_accuracy"] = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """Accuracy over the stream: a panel per group, a colour per size, a dash per model."""
    data = _check_table(
        curves, {"model", "truncate_dim", "group", "step", value}, "fluid_learning_curve"
    )
    groups = [g for g in GROUPS if g in set(data["group"])]
    sizes = sorted(data["truncate_dim"].unique())
    lines = list(dict.fromkeys(data["line"]))
    colors = sample_colorscale(
        "Viridis", [0.9 * i / max(1, len(sizes) - 1) for i in range(len(sizes))]
    )
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=groups, shared_yaxes=True)
    for col, group in enumerate(groups, start=1):
        for s, m in enumerate(sizes):
            for li, name in enumerate(lines):
                rows = data[
                    (data["group"] == group) & (data["truncate_dim"] == m) & (data["line"] == name)
                ]
                if rows.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=rows["step"],
                        y=rows[value],
                        mode="lines",
                        name=f"{name}, m={m}",
                        legendgroup=f"{name}, m={m}",
                        showlegend=col == 1,
                        line={"color": colors[s], "dash": dashes[li % len(dashes)]},
                    ),
                    row=1,
                    col=col,
                )
    label = "Cumulative accuracy (%)" if value == "accuracy" else "Windowed accuracy (%)"
    fig.update_xaxes(title_text="Stream step")
    fig.update_yaxes(title_text=label, col=1)
    fig.update_layout(title=title or "FLUID learning curves", template="plotly_white")
    return fig
