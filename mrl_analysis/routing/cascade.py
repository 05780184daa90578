"""Adaptive classification cascades over nesting sizes (paper §4.2.1, Appendix D.1,
Table 3, Figure 6).

Policy: start at the smallest size; stop at size ``m_i`` when its max softmax
probability ``p_i > t_i``, otherwise move up to ``m_{i+1}``; a cascade capped at
``max_size`` always stops there. Thresholds are learned as in the authors' notebook
(``model_analysis/Model_Cascades.ipynb``): for each consecutive pair ``(m_i, m_{i+1})``
on a held-out subset, every ``t`` of a grid (default ``linspace(0.1, 1, 100)``) scores
the accuracy of "``m_i``'s prediction if ``p_i > t`` else ``m_{i+1}``'s", and ``t_i`` is
the smallest ``t`` with the best accuracy. The rest of the data evaluates the cascade,
over ``n_splits`` random splits (mean ± std).

Speed: probabilities are reduced once to confidence and correctness ``[G, N]``; a
pair's accuracy at all grid thresholds is one ``bincount`` over grid bins, batched over
splits, so no ``[splits, thresholds, sizes, N]`` array is ever built.

Costs reported per cascade: ``expected_size`` (the size that made the prediction, the
paper's "expected dimensionality"), ``expected_cumulative_size`` (the sum of sizes
visited: MRL's separate heads all run) and ``expected_head_macs`` (multiply-adds of
the linear heads: ``num_classes × cumulative size`` for MRL; ``num_classes × final size``
for MRL-E, whose shared head extends the previous logits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.model_selection import ShuffleSplit

from mrl_analysis.core.checks import (
    check_finite,
    check_fraction,
    check_int,
    check_nesting,
    check_scores,
)
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import LEVEL

DEFAULT_GRID = np.linspace(0.1, 1.0, 100)


@dataclass(frozen=True)
class SplitSettings:
    """How a routing study learns and evaluates, shared by the cascade and the router.

    ``n_splits`` random splits of the eval set; on each, ``holdout`` samples (a count, or
    a share of the samples; the paper: 10,000 of 50,000) learn the cascade's thresholds or
    the router's regressions and the rest evaluate them. ``grid``: the cascade's
    candidate thresholds (default :data:`DEFAULT_GRID`; the router has none). Equal
    ``holdout`` and ``seed`` give equal splits, and fewer ``n_splits`` the first of them,
    so a cascade and a router compare on the same samples.
    """

    n_splits: int = 30
    holdout: int | float = 0.2
    grid: tuple[float, ...] | None = None
    seed: int = 0

    def splits(self, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """The (held-out, evaluation) index sets ``[S, n_h]``, ``[S, n_e]``."""
        return holdout_splits(n_samples, self.n_splits, self.holdout, self.seed)

    def thresholds(self) -> np.ndarray:
        """The threshold grid, validated: non-empty and strictly increasing."""
        return _grid(self.grid)

    def first(self, n_splits: int) -> SplitSettings:
        """The first ``n_splits`` of these splits (same holdout and seed)."""
        return replace(self, n_splits=n_splits)


#: The paper's cascade study: 30 random splits, a fifth held out.
CASCADE_SETTINGS = SplitSettings()


def confidence_and_correctness(
    probabilities: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    tta_probabilities: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax probability ``float32 [G, N]`` and top-1 correctness ``bool [G, N]``.

    ``tta_probabilities`` (same shape, e.g. from horizontally flipped inputs) are averaged
    with ``probabilities`` first, the test-time augmentation the paper uses for
    thresholds. Works one size at a time, so memory-mapped inputs are never copied whole.
    """
    probabilities, labels, sizes = check_scores(probabilities, labels, nesting, "probabilities")
    if tta_probabilities is not None and tta_probabilities.shape != probabilities.shape:
        raise ValueError(
            f"tta_probabilities has shape {tta_probabilities.shape}, expected "
            f"{probabilities.shape} like probabilities"
        )
    conf = np.empty((len(sizes), labels.size), dtype=np.float32)
    correct = np.empty((len(sizes), labels.size), dtype=bool)
    for g in range(len(sizes)):
        p = np.asarray(probabilities[g], dtype=np.float32)
        if tta_probabilities is not None:
            p = (p + np.asarray(tta_probabilities[g], dtype=np.float32)) * 0.5
        pred = p.argmax(axis=1)
        conf[g] = np.take_along_axis(p, pred[:, None], axis=1)[:, 0]
        correct[g] = pred == labels
    if conf.min() < 0 or conf.max() > 1 + 1e-4:
        raise ValueError(
            "probabilities must be softmax outputs in [0, 1]; these look like logits: "
            "pass ScoreSet.probabilities() or mrl_analysis.core.numeric.softmax(logits)"
        )
    return conf, correct


def _grid(grid: Sequence[float] | None) -> np.ndarray:
    t = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0):
        raise ValueError("grid must be a non-empty, strictly increasing 1-D list of thresholds")
    return t


def _check_kind(kind: str) -> str:
    if kind not in NESTED_KINDS:
        raise ValueError(f"kind must be 'mrl' (one head per size) or 'mrl-e', got {kind!r}")
    return kind


def _check_reduced(confidence: np.ndarray, correct: np.ndarray, nesting: Sequence[int]) -> list:
    sizes = check_nesting(nesting)
    check_finite(confidence, "confidence")
    if confidence.shape != correct.shape or confidence.ndim != 2:
        raise ValueError(
            f"confidence {confidence.shape} and correct {correct.shape} must both be [G, N]"
        )
    if confidence.shape[0] != len(sizes):
        raise ValueError(f"{confidence.shape[0]} rows for {len(sizes)} nesting sizes {sizes}")
    if len(sizes) < 2:
        raise ValueError("a cascade needs at least two nesting sizes")
    return sizes


def _learn(
    bins: np.ndarray, correct: np.ndarray, holdout: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """Grid indices of the thresholds ``[S, G-1]`` for holdout index sets ``holdout [S, n]``.

    ``bins[g, n]`` counts the grid values below ``confidence[g, n]``, so ``p > grid[k]``
    exactly when ``k < bins``; the accuracy at ``grid[k]`` is then a constant plus the
    sum of ``correct_i - correct_{i+1}`` over samples with ``bins > k``: a reversed
    cumulative sum of one weighted bincount.
    """
    s, _ = holdout.shape
    pairs, t = bins.shape[0] - 1, grid.size
    b = bins[:-1][:, holdout]  # [G-1, S, n]
    delta = correct[:-1][:, holdout].astype(np.int32) - correct[1:][:, holdout]
    key = (np.arange(pairs)[:, None, None] * s + np.arange(s)[None, :, None]) * (t + 1) + b
    hist = np.bincount(key.ravel(), delta.ravel(), pairs * s * (t + 1)).reshape(pairs, s, t + 1)
    # gain[k] = sum of hist[b] for b > k; integer-valued, so ties are exact.
    gain = hist[..., ::-1].cumsum(axis=-1)[..., ::-1][..., 1:]
    return gain.argmax(axis=-1).T  # first maximum = smallest threshold with the best accuracy


def learn_thresholds(
    confidence: np.ndarray,
    correct: np.ndarray,
    nesting: Sequence[int],
    grid: Sequence[float] | None = None,
) -> np.ndarray:
    """Greedy pairwise thresholds ``[G-1]`` (one per size but the largest) on all samples."""
    _check_reduced(confidence, correct, nesting)
    t = _grid(grid)
    bins = np.searchsorted(t, confidence, side="left")
    return t[_learn(bins, correct, np.arange(confidence.shape[1])[None, :], t)[0]]


def _first_pass(passes: np.ndarray) -> np.ndarray:
    """First stage whose test passes (axis 0), or the last size when none does."""
    return np.where(passes.any(axis=0), passes.argmax(axis=0), passes.shape[0])


def stop_index(confidence: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Index of the size each sample stops at in the uncapped cascade, ``[N]``.

    ``confidence [G, N]``, ``thresholds [G-1]``; a sample no threshold stops goes to the
    largest size ``G-1``.
    """
    thr = np.asarray(thresholds, dtype=np.float64)[:, None]
    return _first_pass(confidence[:-1] > thr)


def _cascade_rows(
    stop: np.ndarray,
    evaluated: np.ndarray,
    correct: np.ndarray,
    sizes: list[int],
    kind: str,
    num_classes: int | None,
) -> dict[str, np.ndarray]:
    """Metrics ``[G-1, S]`` for every cap (sizes 1..G-1) from uncapped stops ``[S, N]``.

    Only samples with ``evaluated [S, N]`` count. Per split, a histogram of stop indices
    gives every cap at once: a cap at ``K`` keeps the samples stopping below ``K`` and
    sends the rest to ``K``.
    """
    _check_kind(kind)
    s, n = stop.shape
    g = len(sizes)
    keys = (np.arange(s)[:, None] * g + stop).ravel()
    right = correct[stop, np.arange(n)[None, :]] & evaluated

    def hist(weights: np.ndarray) -> np.ndarray:
        return np.bincount(keys, weights.ravel(), s * g).reshape(s, g)

    count, hits = hist(evaluated), hist(right)
    total = evaluated.sum(axis=1)
    size_arr = np.asarray(sizes, dtype=np.float64)
    cum = np.cumsum(size_arr)

    def mean_cost(cost: np.ndarray, cap: int) -> np.ndarray:
        return (count[:, :cap] @ cost[:cap] + count[:, cap:].sum(axis=1) * cost[cap]) / total

    out: dict[str, list] = {"accuracy": [], "expected_size": [], "expected_cumulative_size": []}
    for cap in range(1, g):
        at_cap = np.count_nonzero((stop >= cap) & evaluated & correct[cap][None, :], axis=1)
        out["accuracy"].append((hits[:, :cap].sum(axis=1) + at_cap) / total)
        out["expected_size"].append(mean_cost(size_arr, cap))
        out["expected_cumulative_size"].append(mean_cost(cum, cap))
    rows = {k: np.asarray(v) for k, v in out.items()}
    per_head = rows["expected_cumulative_size"] if kind == "mrl" else rows["expected_size"]
    rows["expected_head_macs"] = per_head * (np.nan if num_classes is None else num_classes)
    return rows


def evaluate_cascade(
    confidence: np.ndarray,
    correct: np.ndarray,
    nesting: Sequence[int],
    thresholds: Sequence[float],
    *,
    kind: str = "mrl",
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Accuracy and costs of the cascade with ``thresholds`` at every cap, one row per cap.

    Columns: ``max_size, accuracy, expected_size, expected_cumulative_size,
    expected_head_macs`` (NaN without ``num_classes``).
    """
    sizes = _check_reduced(confidence, correct, nesting)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape != (len(sizes) - 1,):
        raise ValueError(f"need {len(sizes) - 1} thresholds (all sizes but the largest)")
    stop = stop_index(confidence, thr)[None, :]
    everyone = np.ones_like(stop, dtype=bool)
    rows = _cascade_rows(stop, everyone, np.asarray(correct, bool), sizes, kind, num_classes)
    return pd.DataFrame({"max_size": sizes[1:], **{k: v[:, 0] for k, v in rows.items()}})


def holdout_splits(
    n_samples: int, n_splits: int, holdout: int | float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_splits`` random (held-out, evaluation) index sets, as ``[S, n_h]``, ``[S, n_e]``.

    ``holdout`` is a sample count or a fraction (the paper: 10,000 of 50,000).
    """
    check_int(n_splits, "n_splits", low=1)
    try:
        splitter = ShuffleSplit(n_splits=n_splits, train_size=holdout, random_state=seed)
        pairs = list(splitter.split(np.empty((n_samples, 1))))
    except ValueError as err:
        raise ValueError(f"cannot hold out {holdout} of {n_samples} samples: {err}") from err
    return np.stack([h for h, _ in pairs]), np.stack([e for _, e in pairs])


@dataclass(frozen=True)
class CascadeStudy:
    """Results of :func:`cascade_study`.

    ``results``: one row per split × cap (``split, max_size, accuracy, expected_size,
    expected_cumulative_size, expected_head_macs``); ``thresholds``: one row per split
    × size (``split, truncate_dim, threshold``).
    """

    model: str
    results: pd.DataFrame
    thresholds: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean, std and interval over splits per cap (paper Table 3; :func:`mean_std`)."""
        metrics = [c for c in self.results.columns if c not in ("split", "max_size")]
        return mean_std(self.results, "max_size", metrics, self.model)

    def points(self, method: str | None = None) -> pd.DataFrame:
        """Rows for the accuracy-vs-size plane (see :mod:`~mrl_analysis.routing.tradeoff`)."""
        s = self.summary()
        return summary_points(s, method or self.model, [f"cap {m}" for m in s["max_size"]])

    def threshold_summary(self) -> pd.DataFrame:
        """Mean and std over splits of the learned threshold per size (``mean, std``)."""
        return (
            self.thresholds.groupby("truncate_dim")["threshold"].agg(["mean", "std"]).reset_index()
        )


def mean_std(
    results: pd.DataFrame, by: str, metrics: Sequence[str], model: str, level: float = LEVEL
) -> pd.DataFrame:
    """Mean and std over splits of ``metrics`` per value of ``by`` (``<metric>_mean``,
    ``<metric>_std``) and the interval covering ``level`` of the splits' values
    (``<metric>_ci_low``, ``<metric>_ci_high``: percentiles over splits, the spread of an
    evaluation on one random split; the splits overlap, so no narrower interval of the
    mean is claimed)."""
    groups = results.groupby(by)[list(metrics)]
    table = groups.agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    tail = (1 - check_fraction(level, "level")) / 2
    for name, q in [("ci_low", tail), ("ci_high", 1 - tail)]:
        bound = groups.quantile(q)
        for m in metrics:
            table[f"{m}_{name}"] = bound[m]
    return table.reset_index().assign(model=model)


def summary_points(summary: pd.DataFrame, method: str, labels: Sequence[str]) -> pd.DataFrame:
    """Rows of a :func:`mean_std` summary for the accuracy-vs-size plane, one per label."""
    return pd.DataFrame(
        {
            "method": method,
            "label": list(labels),
            "expected_size": summary["expected_size_mean"],
            "expected_size_std": summary["expected_size_std"],
            "expected_cumulative_size": summary["expected_cumulative_size_mean"],
            "accuracy": summary["accuracy_mean"],
            "accuracy_std": summary["accuracy_std"],
            "accuracy_ci_low": summary["accuracy_ci_low"],
            "accuracy_ci_high": summary["accuracy_ci_high"],
        }
    )


def cascade_study_reduced(
    confidence: np.ndarray,
    correct: np.ndarray,
    nesting: Sequence[int],
    *,
    settings: SplitSettings = CASCADE_SETTINGS,
    kind: str = "mrl",
    num_classes: int | None = None,
    model: str = "MRL-AC",
) -> CascadeStudy:
    """:func:`cascade_study` on already reduced ``confidence`` / ``correct`` ``[G, N]``."""
    sizes = _check_reduced(confidence, correct, nesting)
    _check_kind(kind)
    t = settings.thresholds()
    held, evaluate = settings.splits(confidence.shape[1])
    n_splits = settings.n_splits
    # Grid indices stand in for confidences: p > grid[k] exactly when k < bins, so the
    # cascade runs on small ints and agrees with the search bit for bit.
    bins = np.searchsorted(t, confidence, side="left").astype(np.int16 if t.size < 2**15 else int)
    best = _learn(bins, correct, held, t)  # [S, G-1]
    stop = _first_pass(bins[:-1, None, :] > best.T[:, :, None])  # [S, N]
    evaluated = np.ones(stop.shape, dtype=bool)
    np.put_along_axis(evaluated, held, False, axis=1)
    rows = _cascade_rows(stop, evaluated, np.asarray(correct, bool), sizes, kind, num_classes)
    thr = t[best]
    caps = len(sizes) - 1
    results = pd.DataFrame(
        {
            "split": np.tile(np.arange(n_splits), caps),
            "max_size": np.repeat(sizes[1:], n_splits),
            **{k: v.ravel() for k, v in rows.items()},
        }
    )
    thresholds = pd.DataFrame(
        {
            "split": np.repeat(np.arange(n_splits), caps),
            "truncate_dim": np.tile(sizes[:-1], n_splits),
            "threshold": thr.ravel(),
        }
    )
    return CascadeStudy(model=model, results=results, thresholds=thresholds)


def cascade_study(
    probabilities: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    tta_probabilities: np.ndarray | None = None,
    settings: SplitSettings = CASCADE_SETTINGS,
    kind: str = "mrl",
    model: str = "MRL-AC",
) -> CascadeStudy:
    """The paper's cascade study: thresholds learned on the held-out samples of each
    split, evaluated on the rest, at every cap (Table 3); see :class:`SplitSettings`."""
    conf, correct = confidence_and_correctness(
        probabilities, labels, nesting, tta_probabilities=tta_probabilities
    )
    return cascade_study_reduced(
        conf,
        correct,
        nesting,
        settings=settings,
        kind=kind,
        num_classes=probabilities.shape[2],
        model=model,
    )


def cascade_summary(studies: Mapping[str, CascadeStudy]) -> pd.DataFrame:
    """Every study's summary (mean ± std over splits per cap; paper Table 3), stacked."""
    return pd.concat([s.summary() for s in studies.values()], ignore_index=True)


def best_cap(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cascade, the cap with the best mean accuracy (the smallest such cap on ties)."""
    ordered = summary.sort_values(["model", "max_size"])
    best = ordered.loc[ordered.groupby("model", sort=False)["accuracy_mean"].idxmax()]
    return best.reset_index(drop=True)


def lowest_thresholds(
    studies: Mapping[str, CascadeStudy], lowest: float = float(DEFAULT_GRID[0])
) -> pd.DataFrame:
    """Where the learned threshold is the grid's ``lowest`` value: moving up from that
    size never helped on that split's held-out samples (ties go to the smallest threshold),
    so on that split the cascade stops there. Columns ``model, truncate_dim, n_splits,
    share_of_splits``, one row per model × size where it happened."""
    rows = []
    for name, study in studies.items():
        th = study.thresholds
        n = th["split"].nunique()
        hits = th[np.isclose(th["threshold"], lowest)].groupby("truncate_dim").size()
        rows += [
            {"model": name, "truncate_dim": int(m), "n_splits": int(k), "share_of_splits": k / n}
            for m, k in hits.items()
        ]
    return pd.DataFrame(rows, columns=["model", "truncate_dim", "n_splits", "share_of_splits"])
