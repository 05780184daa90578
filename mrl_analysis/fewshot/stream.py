"""FLUID streams: a seeded long-tailed stream of pretrain and novel classes (Wallingford et
al. 2020; paper Appendix G, Table 16).

A stream of labelled samples mixes *pretrain* classes (the model was trained on them) and
*novel* classes (it never saw them). Classes get long-tailed frequencies, in a random order
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
for small streams), else *tail*; with its origin this gives ``pretrain-head``,
``novel-head``, ``pretrain-tail`` and ``novel-tail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_choice, check_int, check_labels

Distribution = Literal["zipf", "pareto"]
DISTRIBUTIONS: tuple[str, ...] = ("zipf", "pareto")


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


def _check_positive(value: float, name: str) -> None:
    """A finite number > 0 (NaN compares false with everything, so ``<= 0`` alone lets it
    through: a NaN threshold would silently make every class tail)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def resolve_head_threshold(head_threshold: float, n_samples: int) -> float:
    """``head_threshold`` in samples: values in (0, 1) are a fraction of the stream length."""
    _check_positive(head_threshold, "head_threshold")
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
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    _check_positive(alpha, "alpha")
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
    n = longest if n_samples is None else check_int(n_samples, "n_samples")
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
