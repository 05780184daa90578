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
value          accuracy in percent
label          the legend name (:func:`method_label`), e.g. ``"MRL-E (interpolated)"``
=============  ==============================================================

:func:`accuracy_figure` plots such a table like the paper's Figures 2, 3 and 5.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import faiss
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from tqdm.auto import tqdm

COLUMNS = ["model", "method", "truncate_dim", "metric", "value", "label"]
BASELINE_NAMES = {"first-m": "Rand. FS", "svd": "SVD", "jl": "JL"}

# Elements of one [G, n, C] block of logits handled at once: bounds the temporaries of the
# rank computation to a few hundred MB whatever the dataset size.
_BLOCK_ELEMENTS = 1 << 24

_MODEL_NAMES = {"mrl": "MRL", "mrl-e": "MRL-E", "mrle": "MRL-E", "mrl_e": "MRL-E", "ff": "FF"}
_LABEL_ORDER = [
    "MRL",
    "MRL (interpolated)",
    "MRL-E",
    "MRL-E (interpolated)",
    "FF",
    "FF Rand. FS",
    "FF SVD",
    "FF JL",
]
_COLORS = {
    "MRL": "#1f77b4",
    "MRL-E": "#ff7f0e",
    "FF": "#2ca02c",
    "SVD": "#d62728",
    "JL": "#9467bd",
    "Rand. FS": "#8c564b",
}


# --------------------------------------------------------------------------- labels


def model_display_name(model: str | None) -> str:
    """``"mrl"`` -> ``"MRL"``, ``"mrl-e"`` -> ``"MRL-E"``, ``"FF-64"`` / ``"ff"`` -> ``"FF"``.

    Every FF-k model maps to ``"FF"`` so that the independently trained FF models form one
    line in a figure; other names are returned unchanged.
    """
    if model is None:
        return ""
    key = str(model).strip().lower()
    if key in _MODEL_NAMES:
        return _MODEL_NAMES[key]
    if re.fullmatch(r"ff[-_ ]?\d+", key):
        return "FF"
    return str(model)


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


def _table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["truncate_dim"] = table["truncate_dim"].astype(int)
    table["value"] = table["value"].astype(float)
    return table


# --------------------------------------------------------------------------- checks


def _check_labels(labels: np.ndarray, n: int, name: str, num_classes: int | None = None):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D array with one label per sample ({n}), got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if num_classes is not None and n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} (the number of logit columns), got "
            f"range {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64, copy=False)


def _check_ks(ks: int | Iterable[int], upper: int, name: str, what: str) -> list[int]:
    values = [int(k) for k in ([ks] if isinstance(ks, int | np.integer) else ks)]
    if not values:
        raise ValueError(f"{name} is empty: give at least one k, e.g. {name}=(1,)")
    bad = [k for k in values if not 1 <= k <= upper]
    if bad:
        raise ValueError(f"{name} values {bad} must lie in 1..{upper} ({what})")
    return sorted(set(values))


def _check_sizes(sizes: Iterable[int], dim: int, name: str = "sizes") -> list[int]:
    values = sorted({int(m) for m in sizes})
    if not values:
        raise ValueError(f"{name} is empty: give at least one representation size")
    if values[0] < 1 or values[-1] > dim:
        raise ValueError(
            f"{name} {values} must lie within 1..{dim} (the feature dimension); drop larger "
            "sizes or pass the full features"
        )
    return values


def _check_2d(x: np.ndarray, name: str, shape_hint: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array {shape_hint}, got shape {x.shape}")
    return x


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
    """Top-k accuracy (%) of each nesting size's linear head from stacked logits.

    ``logits`` is ``[G, N, C]`` with ``G = len(nesting)`` (``cache.logits()``; an FF-k model
    has ``G = 1`` and ``nesting = [k]``), ``labels`` is ``[N]``. Rows:
    ``method="linear"``, ``metric="top1"``, ``"top5"``, ...
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(
            f"logits must be stacked [G, N, C] (one row per nesting size), got shape "
            f"{logits.shape}; for a single head use logits[None]"
        )
    g, n, c = logits.shape
    sizes = [int(m) for m in nesting]
    if len(sizes) != g:
        raise ValueError(f"logits have {g} nesting rows but nesting lists {len(sizes)} sizes")
    if n == 0:
        raise ValueError("logits hold no samples (N = 0)")
    labels = _check_labels(labels, n, "labels", c)
    ks = _check_ks(topk, c, "topk", f"the number of classes is {c}")
    hits = np.zeros((g, len(ks)), dtype=np.int64)
    step = max(1, _BLOCK_ELEMENTS // (g * c))
    starts = range(0, n, step)
    for start in tqdm(starts, desc="linear accuracy", leave=False, disable=len(starts) < 4):
        block = logits[:, start : start + step]
        if not np.isfinite(block).all():
            raise ValueError("logits contain NaN or inf; check the model or the cache")
        ranks = label_ranks(block, labels[start : start + step])
        hits += (ranks[:, :, None] < np.asarray(ks)).sum(axis=1)
    rows = [
        {
            "model": model,
            "method": "linear",
            "truncate_dim": m,
            "metric": f"top{k}",
            "value": 100.0 * hits[i, j] / n,
            "label": method_label(model, "linear"),
        }
        for i, m in enumerate(sizes)
        for j, k in enumerate(ks)
    ]
    return _table(rows)


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
    """Top-k accuracy (%) of an MRL-E shared head at any sizes (paper Fig. 5, Table 5).

    The logits at size m are ``features[:, :m] @ weight[:, :m].T + bias`` (the head is the
    model's ``fc.nesting_classifier_0``: ``weight [C, d]``, ``bias [C]``). Sizes are
    visited in increasing order and each adds only its new columns to the previous logits,
    so a dense grid of sizes costs one ``N x d x C`` product in all. Accumulation is in
    float64. Rows: ``method="interpolated"``, ``metric="top1"``, ...
    """
    features = _check_2d(features, "features", "[N, d] of pooled features")
    weight = _check_2d(weight, "weight", "[C, d] (the shared classifier's weight)")
    n, d = features.shape
    c = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(
            f"weight is [C, d] = {weight.shape} but features have d = {d}; pass the MRL-E "
            "head's full weight (fc.nesting_classifier_0.weight)"
        )
    bias = np.asarray(bias)
    if bias.shape != (c,):
        raise ValueError(f"bias must have shape ({c},) to match weight, got {bias.shape}")
    if n == 0:
        raise ValueError("features hold no samples (N = 0)")
    labels = _check_labels(labels, n, "labels", c)
    sizes = _check_sizes(sizes, d)
    ks = _check_ks(topk, c, "topk", f"the number of classes is {c}")
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
    rows = [
        {
            "model": model,
            "method": "interpolated",
            "truncate_dim": m,
            "metric": f"top{k}",
            "value": 100.0 * hits[i, j] / n,
            "label": method_label(model, "interpolated"),
        }
        for i, m in enumerate(sizes)
        for j, k in enumerate(ks)
    ]
    return _table(rows)


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
    """k-NN classification accuracy (%) on the first m features, for each m in ``sizes``.

    For each m the train (database) and test (query) features are truncated to their first
    m columns, L2-normalized after truncation (``normalize=True``, as the authors do), and
    searched exactly with ``faiss.IndexFlatL2``. The prediction is the majority label of
    the k nearest train samples, ties going to the class of the nearest neighbour
    (:func:`knn_vote`). Rows: ``metric="1-NN"``, ``"5-NN"``, ...; ``method`` and ``label``
    are written as given (``label`` defaults to :func:`method_label`).

    At m = 1 every normalized vector is +-1, so 1-NN degenerates into ties; the paper starts
    at m = 8.
    """
    train_features = _check_2d(train_features, "train_features", "[N_train, d]")
    test_features = _check_2d(test_features, "test_features", "[N_test, d]")
    n_train, d = train_features.shape
    n_test = test_features.shape[0]
    if test_features.shape[1] != d:
        raise ValueError(
            f"train_features have d = {d} but test_features have d = "
            f"{test_features.shape[1]}; embed both with the same model"
        )
    if n_train == 0 or n_test == 0:
        raise ValueError(f"need train and test samples, got {n_train} and {n_test}")
    train_labels = _check_labels(train_labels, n_train, "train_labels")
    test_labels = _check_labels(test_labels, n_test, "test_labels")
    sizes = _check_sizes(sizes, d)
    ks = _check_ks(k, n_train, "k", f"the number of train samples is {n_train}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
    rows = [
        {
            "model": model,
            "method": method,
            "truncate_dim": m,
            "metric": f"{kk}-NN",
            "value": 100.0 * hits[i, j] / n_test,
            "label": name,
        }
        for i, m in enumerate(sizes)
        for j, kk in enumerate(ks)
    ]
    return _table(rows)


# --------------------------------------------------------------------------- figure


def _metric_title(metric: str) -> str:
    top = re.fullmatch(r"top(\d+)", metric)
    if top:
        return f"Top-{top.group(1)} accuracy (%)"
    return f"{metric} accuracy (%)"


def _style(label: str, index: int) -> dict:
    dash = "solid"
    color = None
    for key in ("Rand. FS", "SVD", "JL"):
        if label.endswith(key):
            color, dash = _COLORS[key], "dot"
    if color is None:
        base = label.removesuffix(" (interpolated)")
        color = _COLORS.get(base)
        if base != label:
            dash = "dash"
    if color is None:
        color = qualitative.Plotly[index % len(qualitative.Plotly)]
    return {"color": color, "dash": dash}


def _tickvals(sizes: np.ndarray) -> list[int]:
    sizes = sorted(int(m) for m in sizes)
    if len(sizes) <= 12:
        return sizes
    # Dense grids (interpolation) would crowd the axis: label the powers of two instead.
    lo, hi = int(np.floor(np.log2(sizes[0]))), int(np.ceil(np.log2(sizes[-1])))
    return [2**e for e in range(lo, hi + 1) if sizes[0] <= 2**e <= sizes[-1]]


def accuracy_figure(
    table: pd.DataFrame, metric: str = "top1", title: str | None = None
) -> go.Figure:
    """Accuracy vs representation size on a log-2 x axis, one line per legend label.

    ``table`` is any concatenation of this module's tables; rows with the same ``label``
    (e.g. every FF-k model, each at its own size) form one line, as in the paper's
    Figures 2, 3 and 5.
    """
    missing = {"truncate_dim", "metric", "value"} - set(table.columns)
    if missing:
        raise ValueError(
            f"table lacks columns {sorted(missing)}; pass a table from linear_accuracy, "
            "knn_accuracy, mrl_e_interpolated_accuracy or baseline_knn_accuracy"
        )
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(
            f"no rows with metric {metric!r}; the table has {sorted(table['metric'].unique())}"
        )
    labels = (
        rows["label"]
        if "label" in rows.columns
        else pd.Series(
            [method_label(mo, me) for mo, me in zip(rows["model"], rows["method"], strict=True)],
            index=rows.index,
        )
    )
    present = list(dict.fromkeys(labels))
    order = [name for name in _LABEL_ORDER if name in present]
    order += [name for name in present if name not in order]
    fig = go.Figure()
    for i, name in enumerate(order):
        line = rows[labels == name].sort_values("truncate_dim")
        fig.add_trace(
            go.Scatter(
                x=line["truncate_dim"],
                y=line["value"],
                mode="lines+markers",
                name=name,
                line=_style(name, i),
                # Interpolated grids can be dense: small markers keep the line readable.
                marker={"size": 4 if name.endswith("(interpolated)") else 7},
            )
        )
    fig.update_xaxes(
        type="log",
        title_text="Representation size",
        tickvals=_tickvals(rows["truncate_dim"].unique()),
        ticktext=[str(v) for v in _tickvals(rows["truncate_dim"].unique())],
    )
    fig.update_yaxes(title_text=_metric_title(metric))
    fig.update_layout(
        title=title or f"{_metric_title(metric)} vs representation size",
        template="plotly_white",
        legend_title_text="",
    )
    return fig
