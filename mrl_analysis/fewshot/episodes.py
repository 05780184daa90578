"""Few-shot nearest-class-mean (NCM) classification per representation size (paper §5, App. G).

An *n*-shot *k*-way episode draws ``k`` classes, ``n`` support and ``q`` query samples per
class (disjoint); the class means of the support samples classify the queries
(:mod:`mrl_analysis.fewshot.ncm` has the NCM conventions). Accuracy is averaged over
episodes, with a percentile bootstrap interval over the episodes
(:func:`mrl_analysis.core.stats.mean_ci`; the resamples are shared by every size of a grid
point, so sizes stay paired), for each nesting size, shot count and way count (paper
Table 15).

Both settings of the issue are the same computation on different inputs:

* sample efficiency: the model's own classes, ``features`` from a held-out split;
* novel classes: a model trained on a class subset (``split_classes``), features of the
  held-out split restricted with ``classes=novel_classes``.

Episodes depend only on ``labels``, ``classes`` and ``seed``, so every model evaluated on the
same split sees the same episodes (paired comparison); every size sees them too.

Why no faiss here: the "database" of an episode is its ``k`` class means, different in every
episode and at every size; one batched matrix product per size scores all the episodes of a
chunk at once, where faiss would need an index per episode and size.

Tables (accuracy and its interval as fractions in [0, 1]):

============  ============================================================
model         the caller's name (``"MRL"``, ``"MRL-E"``, ``"FF-64"``, ...)
truncate_dim  the representation size m
shots         n, support samples per class
ways          k, classes per episode (the class count for "all classes")
queries       q, query samples per class
episodes      E, the number of episodes
accuracy      mean episode accuracy
ci_low        lower end of its bootstrap interval over episodes (95% by default)
ci_high       upper end
============  ============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_features, check_int, check_labels, check_sizes
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.stats import LEVEL, N_BOOT, mean_ci
from mrl_analysis.fewshot.ncm import Metric, check_metric, prefix_norms, safe_norms, single_threaded

COLUMNS = [
    "model",
    "truncate_dim",
    "shots",
    "ways",
    "queries",
    "episodes",
    "accuracy",
    "ci_low",
    "ci_high",
]

# Random keys drawn at once when sampling episodes (~128 MB of float64).
_SAMPLE_ELEMENTS = 1 << 24
# Gathered features of one chunk of episodes (~4 MB of float32): the per-size passes over a
# chunk then run in cache, which measured faster than larger chunks.
_SCORE_ELEMENTS = 1 << 20


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
    shots = check_int(shots, "shots", low=1)
    n_episodes = check_int(n_episodes, "n_episodes", low=1)
    chosen, counts, starts, order = _class_pool(labels, classes)
    n_classes = len(chosen)
    k = n_classes if ways is None else check_int(ways, "ways")
    if not 2 <= k <= n_classes:
        raise ValueError(
            f"ways={ways} needs 2..{n_classes} classes (the classes available); use a smaller "
            "ways, or ways=None for all classes"
        )
    q = int(counts.min()) - shots if queries is None else check_int(queries, "queries")
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
    """NCM accuracy (fraction) of every episode at every size: ``[len(sizes), E]``.

    ``nesting``: the sizes to evaluate (sorted and de-duplicated, rows in that order).
    Episodes are processed in chunks; within a chunk the support and query features are
    gathered once and each size reads a prefix of them, in the precision of ``features``
    (float32 from a cache; float64 stays float64).
    """
    x = check_features(features)
    sizes = check_sizes(nesting, x.shape[1], "nesting")
    return _episode_accuracy(x, episodes, sizes, check_metric(metric), progress)


def _episode_accuracy(
    x: np.ndarray, episodes: Episodes, sizes: list[int], metric: str, progress: bool
) -> np.ndarray:
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    # Samples recur across episodes: their norms at every size are computed once.
    norms = safe_norms(prefix_norms(x, sizes)).astype(dtype)  # [G, N]
    out = np.empty((len(sizes), episodes.n_episodes), dtype=np.float64)
    per_episode = episodes.ways * (episodes.shots + episodes.queries) * sizes[-1]
    rows = max(1, _SCORE_ELEMENTS // per_episode)
    starts = range(0, episodes.n_episodes, rows)
    with single_threaded():
        for lo in progress_bar(
            starts, desc="few-shot episodes", unit="chunk", disable=not progress
        ):
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


def episode_accuracies(
    features: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    shots: int,
    ways: int | None,
    queries: int | None = 15,
    n_episodes: int = 1000,
    classes: Sequence[int] | None = None,
    metric: Metric = "cosine",
    seed: int = 0,
) -> np.ndarray:
    """NCM accuracy of every episode of one grid point at every size: ``[len(sizes), E]``.

    The episodes are those :func:`fewshot_accuracy` draws for ``(shots, ways)`` with the
    same arguments (one seed derivation), so the per-episode values behind a table row can
    be bootstrapped further (e.g. few-shot saturation's finding). ``ways=None``: every class.
    """
    x = check_features(features)
    y = check_labels(labels, x.shape[0])
    sizes = check_sizes(nesting, x.shape[1], "nesting")
    check_metric(metric)
    shots = check_int(shots, "shots", low=1)
    n_classes = len(_class_pool(y, classes)[0])
    k = n_classes if ways is None else check_int(ways, "ways")
    episodes = _grid_episodes(y, shots, k, n_classes, queries, n_episodes, classes, seed)
    return _episode_accuracy(x, episodes, sizes, metric, progress=False)


def _grid_episodes(
    y: np.ndarray,
    shots: int,
    k: int,
    n_classes: int,
    queries: int | None,
    n_episodes: int,
    classes: Sequence[int] | None,
    seed: int,
) -> Episodes:
    """The episodes of grid point ``(shots, k)``, seeded from ``(seed, shots, k, queries)``."""
    return sample_episodes(
        y,
        ways=None if k == n_classes else k,
        shots=shots,
        queries=queries,
        n_episodes=n_episodes,
        classes=classes,
        seed=[seed, shots, k, 0 if queries is None else int(queries)],
    )


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
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Few-shot NCM accuracy table for every (shots, ways, size): see the module docstring.

    ``ways`` entries of ``None`` mean all classes; way counts resolving to the same number
    are evaluated once. Each (shots, ways) grid point draws its own episodes from a seed
    derived from ``(seed, shots, ways, queries)``; its interval bootstraps those episodes
    (``n_boot`` resamples at ``level``, seeded by ``seed``). An episode costs about
    ``k * (k * q) * sum(nesting)`` multiply-adds: "all classes" on many classes is costly, and
    its episodes vary less (only the samples change), so give it fewer episodes in a call of
    its own.
    """
    x = check_features(features)
    y = check_labels(labels, x.shape[0])
    sizes = check_sizes(nesting, x.shape[1], "nesting")
    check_metric(metric)
    if not shots or not ways:
        raise ValueError("shots and ways need at least one value each, e.g. shots=(1, 5)")
    n_classes = len(_class_pool(y, classes)[0])
    resolved = list(dict.fromkeys(n_classes if w is None else check_int(w, "ways") for w in ways))
    rows: list[dict] = []
    grid = [(check_int(n, "shots", low=1), k) for n in shots for k in resolved]
    for n, k in progress_bar(
        grid, desc=f"few-shot · {model}", unit="grid point", disable=not progress
    ):
        episodes = _grid_episodes(y, n, k, n_classes, queries, n_episodes, classes, seed)
        acc = _episode_accuracy(x, episodes, sizes, metric, progress=False)
        ci = mean_ci(acc, n_boot, level=level, seed=seed)
        rows += [
            {
                "model": model,
                "truncate_dim": m,
                "shots": n,
                "ways": k,
                "queries": episodes.queries,
                "episodes": n_episodes,
                "accuracy": ci["value"].iat[g],
                "ci_low": ci["ci_low"].iat[g],
                "ci_high": ci["ci_high"].iat[g],
            }
            for g, m in enumerate(sizes)
        ]
    return pd.DataFrame(rows, columns=COLUMNS)
