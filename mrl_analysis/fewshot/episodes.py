"""Few-shot nearest-class-mean (NCM) classification per representation size (paper §5, App. G).

An *n*-shot *k*-way episode draws ``k`` classes, ``n`` support and ``q`` query samples per
class (disjoint); the class means of the support samples classify the queries. Accuracy is
averaged over episodes, with a 95% confidence interval ``1.96 * std / sqrt(E)``, for each
nesting size, shot count and way count (paper Table 15).

NCM convention, shared with :mod:`mrl_analysis.fewshot.fluid`: features are truncated to their first
``m`` columns and L2-normalized *after* truncation (a zero vector stays zero); a class mean
is the average of its normalized samples. ``metric="cosine"`` (default, as in Meta-Baseline,
Chen et al. 2021, which the paper cites for NCM) scores a query by its cosine similarity to
each mean; ``metric="euclidean"`` by the negated squared distance between the normalized
query and the mean (an average of unit vectors, not renormalized). Ties go to the class
listed first (the lowest label in FLUID).

Both settings of the issue are the same computation on different inputs:

* sample efficiency: the model's own classes, ``features`` from a held-out split;
* novel classes: a model trained on a class subset (``datasets.split_classes``), features
  of the held-out split restricted with ``classes=novel_classes``.

Episodes depend only on ``labels``, ``classes`` and ``seed``, so every model evaluated on the
same split sees the same episodes (paired comparison); every size sees them too.

Why no faiss here: the "database" of an episode is its ``k`` class means, different in every
episode and at every size; one batched matrix product per size scores all the episodes of a
chunk at once, where faiss would need an index per episode and size.

Tables (accuracy and ``ci95`` in percent, as in the paper):

============  ============================================================
model         the caller's name (``"MRL"``, ``"MRL-E"``, ``"FF-64"``, ...)
truncate_dim  the representation size m
shots         n, support samples per class
ways          k, classes per episode (the class count for "all classes")
queries       q, query samples per class
episodes      E, the number of episodes
accuracy      mean episode accuracy (%)
ci95          half-width of the 95% confidence interval of the mean (%)
============  ============================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mrl_analysis.accuracy.metrics import model_display_name

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")
COLUMNS = ["model", "truncate_dim", "shots", "ways", "queries", "episodes", "accuracy", "ci95"]

# Random keys drawn at once when sampling episodes (~128 MB of float64).
_SAMPLE_ELEMENTS = 1 << 24
# Gathered features of one chunk of episodes (~4 MB of float32): the per-size passes over a
# chunk then run in cache, which measured faster than larger chunks.
_SCORE_ELEMENTS = 1 << 20
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


# --------------------------------------------------------------------------- shared checks


def check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """``features`` as a 2-D floating array ``[N, d]`` (no copy when already one)."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x


def check_labels(labels: np.ndarray, n: int | None = None, name: str = "labels") -> np.ndarray:
    """``labels`` as int64 ``[n]`` (any length if ``n`` is None) of non-negative labels."""
    y = np.asarray(labels)
    n = y.shape[0] if n is None and y.ndim == 1 else n
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D array with one label per sample ({n}), got shape {y.shape}"
        )
    if n and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if n and y.min() < 0:
        raise ValueError(f"{name} must be non-negative class labels, got minimum {y.min()}")
    return y


def check_nesting(nesting: Sequence[int], dim: int) -> list[int]:
    """Sorted distinct sizes within ``1..dim``."""
    sizes = sorted({int(m) for m in nesting})
    if not sizes:
        raise ValueError("nesting is empty: give at least one representation size")
    if sizes[0] < 1 or sizes[-1] > dim:
        raise ValueError(
            f"nesting {sizes} must lie within 1..{dim} (the feature dimension); drop larger "
            "sizes or pass the full features"
        )
    return sizes


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {METRICS}")
    return metric


def prefix_norms(x: np.ndarray, nesting: Sequence[int]) -> np.ndarray:
    """L2 norms of ``x[..., :m]`` for every m in ``nesting``: ``[len(nesting), *x.shape[:-1]]``.

    Squares are summed block by block between consecutive sizes, so all sizes together cost
    one pass over the columns.
    """
    out = np.empty((len(nesting), *x.shape[:-1]), dtype=np.float64)
    total = np.zeros(x.shape[:-1], dtype=np.float64)
    prev = 0
    for g, m in enumerate(nesting):
        block = x[..., prev:m]
        total = total + np.einsum("...i,...i->...", block, block, dtype=np.float64)
        out[g] = total
        prev = m
    return np.sqrt(out)


def safe_norms(norms: np.ndarray) -> np.ndarray:
    """Norms to divide by: a zero norm becomes 1 so that a zero vector stays zero.

    Dividing (rather than multiplying by an inverse) keeps ``x / |x|`` exactly +-1 at m = 1,
    so exact ties between classes there stay exact ties, broken the same way everywhere.
    """
    return np.where(norms > 0, norms, 1.0)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS on one thread inside the block, restoring the setting after.

    Both learners issue many small products (one per chunk and size); on a shared 2-core
    machine, BLAS thread hand-offs made them 3-10x slower in wall time than one thread.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------- episodes


@dataclass(frozen=True, eq=False)
class Episodes:
    """Sampled episodes: sample indices into the evaluated arrays.

    ``classes[e, j]`` is the label of the j-th class of episode e; its support samples are
    ``support[e, j]`` and its queries ``query[e, j]`` (so a query's true class is its
    position j, no label lookup needed).
    """

    classes: np.ndarray  # [E, k]
    support: np.ndarray  # [E, k, n]
    query: np.ndarray  # [E, k, q]

    @property
    def n_episodes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def ways(self) -> int:
        return int(self.classes.shape[1])

    @property
    def shots(self) -> int:
        return int(self.support.shape[2])

    @property
    def queries(self) -> int:
        return int(self.query.shape[2])


def _class_pool(labels: np.ndarray, classes: Sequence[int] | None) -> tuple[np.ndarray, ...]:
    """Eligible classes, their sample counts, start offsets into ``order`` and ``order``."""
    present, counts = np.unique(labels, return_counts=True)
    if classes is None:
        chosen = present
    else:
        chosen = np.unique(np.asarray(classes, dtype=np.int64))
        missing = np.setdiff1d(chosen, present)
        if missing.size:
            raise ValueError(
                f"classes {missing.tolist()[:10]} have no samples in labels; pass classes "
                "present in the evaluated split"
            )
    keep = np.isin(labels, chosen)
    order = np.flatnonzero(keep)[np.argsort(labels[keep], kind="stable")]
    class_counts = counts[np.searchsorted(present, chosen)]
    starts = np.concatenate([[0], np.cumsum(class_counts)[:-1]])
    return chosen, class_counts, starts, order


def sample_episodes(
    labels: np.ndarray,
    *,
    ways: int | None,
    shots: int,
    queries: int | None = 15,
    n_episodes: int = 1000,
    classes: Sequence[int] | None = None,
    seed: int | Sequence[int] = 0,
) -> Episodes:
    """Seeded ``shots``-shot ``ways``-way episodes with disjoint support and query sets.

    ``ways=None`` uses every class (of ``classes``, default all labels present);
    ``queries=None`` takes as many queries per class as the smallest eligible class allows
    (``min count - shots``, e.g. ``10 - n`` on ImageNetV2). Every class an episode may draw
    needs ``shots + queries`` samples. The whole draw is vectorized: classes by sorting
    random keys per episode, samples by a partial sort of random keys per (episode, class).
    """
    labels = check_labels(labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    chosen, counts, starts, order = _class_pool(labels, classes)
    n_classes = len(chosen)
    k = n_classes if ways is None else int(ways)
    if not 2 <= k <= n_classes:
        raise ValueError(
            f"ways={ways} needs 2..{n_classes} classes (the classes available); use a smaller "
            "ways, or ways=None for all classes"
        )
    q = int(counts.min()) - shots if queries is None else int(queries)
    if q < 1:
        raise ValueError(
            f"no samples left for queries: the smallest class has {counts.min()} samples and "
            f"shots={shots}; lower shots or give more samples per class"
        )
    enough = counts >= shots + q
    if ways is None and not enough.all():
        small = chosen[~enough].tolist()[:10]
        raise ValueError(
            f"classes {small} have fewer than shots + queries = {shots + q} samples; lower "
            "queries or shots, or restrict classes"
        )
    if enough.sum() < k:
        raise ValueError(
            f"only {int(enough.sum())} classes have shots + queries = {shots + q} samples, "
            f"fewer than ways={k}; lower queries, shots or ways"
        )
    pool = np.flatnonzero(enough)
    rng = np.random.default_rng(seed)
    # Classes per episode: the k smallest of random keys (uniform k-subsets, random order).
    pick = np.argsort(rng.random((n_episodes, len(pool))), axis=1)[:, :k]
    cls = pool[pick]  # [E, k] positions into `chosen`
    per = shots + q
    width = int(counts[pool].max())
    kth = [shots - 1, per - 1]
    rows = max(1, _SAMPLE_ELEMENTS // (k * width))
    positions = np.empty((n_episodes, k, per), dtype=np.int64)
    for lo in range(0, n_episodes, rows):
        c = cls[lo : lo + rows]
        keys = rng.random((*c.shape, width))
        # Padding beyond a class's count gets a key above every real key (which are < 1).
        keys[np.arange(width) >= counts[c][..., None]] = 2.0
        # Partial sort: the `shots` smallest keys are the support, the next `q` the queries;
        # both are uniform random subsets and disjoint by construction.
        part = np.argpartition(keys, kth, axis=-1)[..., :per]
        positions[lo : lo + rows] = part
    samples = order[starts[cls][..., None] + positions]
    return Episodes(
        classes=chosen[cls],
        support=samples[..., :shots],
        query=samples[..., shots:],
    )


# --------------------------------------------------------------------------- NCM


def episode_accuracy(
    features: np.ndarray,
    episodes: Episodes,
    nesting: Sequence[int],
    *,
    metric: Metric = "cosine",
    progress: bool = True,
) -> np.ndarray:
    """NCM accuracy (fraction) of every episode at every size: ``[len(nesting), E]``.

    Episodes are processed in chunks; within a chunk the support and query features are
    gathered once and each size reads a prefix of them, in the precision of ``features``
    (float32 from a cache; float64 stays float64).
    """
    x = check_features(features)
    sizes = check_nesting(nesting, x.shape[1])
    check_metric(metric)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    # Samples recur across episodes: their norms at every size are computed once.
    norms = safe_norms(prefix_norms(x, sizes)).astype(dtype)  # [G, N]
    out = np.empty((len(sizes), episodes.n_episodes), dtype=np.float64)
    per_episode = episodes.ways * (episodes.shots + episodes.queries) * sizes[-1]
    rows = max(1, _SCORE_ELEMENTS // per_episode)
    starts = range(0, episodes.n_episodes, rows)
    with single_threaded():
        for lo in tqdm(starts, desc="few-shot episodes", leave=False, disable=not progress):
            chunk = slice(lo, lo + rows)
            out[:, chunk] = _chunk_accuracy(x, episodes, chunk, sizes, norms, metric, dtype)
    return out


def _chunk_accuracy(
    x: np.ndarray,
    episodes: Episodes,
    chunk: slice,
    sizes: list[int],
    norms: np.ndarray,
    metric: str,
    dtype: type,
) -> np.ndarray:
    k, n, q = episodes.ways, episodes.shots, episodes.queries
    support = episodes.support[chunk]  # [B, k, n]
    query = episodes.query[chunk].reshape(len(support), k * q)  # [B, kq]
    # Plain row gathers when every column is used: twice as fast as a mixed index.
    cols = slice(None) if sizes[-1] == x.shape[1] else slice(sizes[-1])
    sup = np.asarray(x[support][..., cols], dtype=dtype)
    qry = np.asarray(x[query][..., cols], dtype=dtype)
    truth = np.repeat(np.arange(k), q)
    out = np.empty((len(sizes), len(support)))
    for g, m in enumerate(sizes):
        means = (sup[..., :m] / norms[g][support][..., None]).sum(axis=2) / n  # [B, k, m]
        queries = qry[..., :m] / norms[g][query][..., None]  # [B, kq, m]
        # means @ queries^T is several times faster than the transposed product for these
        # skinny shapes (k rows against k*q columns).
        dots = np.matmul(means, queries.transpose(0, 2, 1))  # [B, k, kq]
        sq = np.einsum("bkd,bkd->bk", means, means)
        if metric == "cosine":
            norm = np.sqrt(sq)
            scores = dots / np.where(norm > 0, norm, 1.0)[..., None]
        else:
            scores = 2.0 * dots - sq[..., None]
        out[g] = (scores.argmax(axis=1) == truth).mean(axis=-1)
    return out


def _summary(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% CI half-width (percent) over the last axis."""
    e = acc.shape[-1]
    mean = 100.0 * acc.mean(-1)
    std = acc.std(-1, ddof=1) if e > 1 else np.zeros(acc.shape[:-1])
    return mean, 100.0 * 1.96 * std / np.sqrt(e)


def fewshot_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    shots: Sequence[int] = (1, 3, 5, 7, 9),
    ways: Sequence[int | None] = (5, 10, None),
    queries: int | None = 15,
    n_episodes: int = 1000,
    classes: Sequence[int] | None = None,
    metric: Metric = "cosine",
    seed: int = 0,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Few-shot NCM accuracy table for every (shots, ways, size): see the module docstring.

    ``ways`` entries of ``None`` mean all classes; way counts resolving to the same number
    are evaluated once. Each (shots, ways) grid point draws its own episodes from a seed
    derived from ``(seed, shots, ways, queries)``. An episode costs about
    ``k * (k * q) * sum(nesting)`` multiply-adds: "all classes" on many classes is costly, and
    its episodes vary less (only the samples change), so give it fewer episodes in a call of
    its own.
    """
    x = check_features(features)
    y = check_labels(labels, x.shape[0])
    sizes = check_nesting(nesting, x.shape[1])
    check_metric(metric)
    if not shots or not ways:
        raise ValueError("shots and ways need at least one value each, e.g. shots=(1, 5)")
    n_classes = len(_class_pool(y, classes)[0])
    resolved = list(dict.fromkeys(n_classes if w is None else int(w) for w in ways))
    rows: list[dict] = []
    grid = [(int(n), k) for n in shots for k in resolved]
    for n, k in tqdm(grid, desc=f"few-shot {model}", leave=False, disable=not progress):
        episodes = sample_episodes(
            y,
            ways=None if k == n_classes else k,
            shots=n,
            queries=queries,
            n_episodes=n_episodes,
            classes=classes,
            seed=[seed, n, k, 0 if queries is None else int(queries)],
        )
        acc = episode_accuracy(x, episodes, sizes, metric=metric, progress=False)
        mean, ci = _summary(acc)
        rows += [
            {
                "model": model,
                "truncate_dim": m,
                "shots": n,
                "ways": k,
                "queries": episodes.queries,
                "episodes": n_episodes,
                "accuracy": mean[g],
                "ci95": ci[g],
            }
            for g, m in enumerate(sizes)
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _check_table(table: pd.DataFrame, needed: set[str], source: str) -> None:
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; pass a table from {source}")
    if table.empty:
        raise ValueError(f"table is empty; pass a table from {source}")


def saturation_sizes(table: pd.DataFrame, tolerance: float = 0.5) -> pd.DataFrame:
    """The smallest size within ``tolerance`` points of the largest size's accuracy.

    Computed per line (``model_display_name``: FF-k models form one "FF" line), shots, ways and any
    other key columns of ``table`` (e.g. a ``setting`` column the caller added). Columns:
    the keys, ``saturation_dim``, ``accuracy`` at it, ``largest_dim`` and
    ``largest_accuracy``. The paper's example: 1-shot saturates at 32 dims (Table 15).
    """
    _check_table(table, {"model", "truncate_dim", "accuracy"}, "fewshot_accuracy")
    if tolerance < 0:
        raise ValueError(f"tolerance is in accuracy points and must be >= 0, got {tolerance}")
    data = table.assign(model=table["model"].map(model_display_name))
    keys = [c for c in data.columns if c not in ("truncate_dim", "accuracy", "ci95")]
    rows = []
    for key, group in data.groupby(keys, sort=False, dropna=False):
        group = group.sort_values("truncate_dim")
        top = group.iloc[-1]
        within = group[group["accuracy"] >= top["accuracy"] - tolerance].iloc[0]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "saturation_dim": int(within["truncate_dim"]),
                "accuracy": float(within["accuracy"]),
                "largest_dim": int(top["truncate_dim"]),
                "largest_accuracy": float(top["accuracy"]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def log2_axis(sizes: Sequence[int]) -> dict:
    """Plotly axis settings for representation sizes on a log-2 scale."""
    ticks = sorted({int(m) for m in sizes})
    return {"type": "log", "tickvals": ticks, "ticktext": [str(m) for m in ticks]}


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("rgb("):
        return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    h = color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def plot_fewshot(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Few-shot accuracy vs size (log-2 x axis) with 95% CI bands.

    One panel per way count, one colour per shot count, one dash style per line
    (:func:`model_display_name`; FF-k models join into one "FF" line).
    """
    _check_table(
        table, {"model", "truncate_dim", "shots", "ways", "accuracy", "ci95"}, "fewshot_accuracy"
    )
    data = table.assign(line=table["model"].map(model_display_name))
    ways = sorted(data["ways"].unique())
    shots = sorted(data["shots"].unique())
    lines = list(dict.fromkeys(data["line"]))
    colors = (
        sample_colorscale("Viridis", [0.85 * i / max(1, len(shots) - 1) for i in range(len(shots))])
        if len(shots) > 1
        else [qualitative.Plotly[0]]
    )
    fig = make_subplots(
        rows=1, cols=len(ways), subplot_titles=[f"{k}-way" for k in ways], shared_yaxes=True
    )
    for col, k in enumerate(ways, start=1):
        for s, n in enumerate(shots):
            for li, name in enumerate(lines):
                rows = data[(data["ways"] == k) & (data["shots"] == n) & (data["line"] == name)]
                if rows.empty:
                    continue
                rows = rows.sort_values("truncate_dim")
                x = rows["truncate_dim"].tolist()
                lo = (rows["accuracy"] - rows["ci95"]).tolist()
                hi = (rows["accuracy"] + rows["ci95"]).tolist()
                fig.add_trace(
                    go.Scatter(
                        x=x + x[::-1],
                        y=hi + lo[::-1],
                        mode="lines",
                        fill="toself",
                        fillcolor=_rgba(colors[s], 0.15),
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                    ),
                    row=1,
                    col=col,
                )
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=rows["accuracy"],
                        mode="lines+markers",
                        name=f"{name}, {n}-shot",
                        legendgroup=f"{name}, {n}-shot",
                        showlegend=col == 1,
                        line={"color": colors[s], "dash": _DASHES[li % len(_DASHES)]},
                        customdata=rows["ci95"],
                        hovertemplate="m=%{x}: %{y:.2f} ± %{customdata:.2f}%<extra>%{fullData.name}"
                        "</extra>",
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="Representation size", **log2_axis(data["truncate_dim"]))
    fig.update_yaxes(title_text="Accuracy (%)", col=1)
    fig.update_layout(
        title=title or "Few-shot NCM accuracy vs representation size (95% CI)",
        template="plotly_white",
    )
    return fig


def plot_saturation(saturation: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Saturation size vs shot count (log-2 y axis), one line per model, a panel per ways."""
    _check_table(saturation, {"model", "shots", "ways", "saturation_dim"}, "saturation_sizes")
    ways = sorted(saturation["ways"].unique())
    fig = make_subplots(
        rows=1, cols=len(ways), subplot_titles=[f"{k}-way" for k in ways], shared_yaxes=True
    )
    lines = list(dict.fromkeys(saturation["model"]))
    for col, k in enumerate(ways, start=1):
        for li, name in enumerate(lines):
            rows = saturation[(saturation["ways"] == k) & (saturation["model"] == name)]
            rows = rows.sort_values("shots")
            fig.add_trace(
                go.Scatter(
                    x=rows["shots"],
                    y=rows["saturation_dim"],
                    mode="lines+markers",
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=col == 1,
                    line={"color": qualitative.Plotly[li % len(qualitative.Plotly)]},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="Shots per class", dtick=1)
    dims = saturation[[c for c in ("saturation_dim", "largest_dim") if c in saturation]]
    fig.update_yaxes(**log2_axis(dims.to_numpy().ravel()))
    fig.update_yaxes(title_text="Saturation size", col=1)
    fig.update_layout(
        title=title or "Smallest size within tolerance of the largest size's accuracy",
        template="plotly_white",
    )
    return fig
