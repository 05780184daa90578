"""Oracle routing across nesting sizes (paper Appendix J, Tables 22-23).

The oracle labels a sample correct when the prediction at *any* nesting size is correct;
it is the ceiling for any policy that picks one size per sample.

Inputs are plain arrays: ``scores`` (logits or probabilities) ``[G, N, C]`` with
``G = len(nesting)``, ``labels`` ``[N]``; the oracle functions also take predicted classes
``int [G, N]`` in place of ``scores``. FF baselines fit the same shape: stack the
single-row outputs of FF-k models along the first axis and pass their ``k`` as ``nesting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_labels, check_nesting, check_scores
from mrl_analysis.core.numeric import predictions
from mrl_analysis.core.stats import LEVEL, N_BOOT, Bootstrap, bootstrap_means, percentile_interval

NEVER = "never"


def correctness(scores: np.ndarray, labels: np.ndarray, nesting: Sequence[int]) -> np.ndarray:
    """Boolean ``[G, N]``: is the top-1 prediction at each size correct."""
    scores, labels, _ = check_scores(scores, labels, nesting)
    return predictions(scores) == labels[None, :]


def accuracy_by_size(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    model: str = "MRL",
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Top-1 accuracy per size with its bootstrap interval over the samples (``n_boot``
    resamples): columns ``model, truncate_dim, accuracy, ci_low, ci_high``."""
    correct = correctness(scores, labels, nesting)
    low, high = bootstrap_means(correct, n_boot).interval()
    return pd.DataFrame(
        {
            "model": model,
            "truncate_dim": list(nesting),
            "accuracy": correct.mean(axis=1),
            "ci_low": low,
            "ci_high": high,
        }
    )


@dataclass(frozen=True)
class OracleBootstrap:
    """Bootstrap replicates ``[B]`` of the oracle's accuracy, of the best single size's and
    of their difference (the gap), over the samples; the best size is re-chosen in every
    resample, as on the data."""

    oracle: np.ndarray
    best: np.ndarray
    gap: np.ndarray
    level: float

    def interval(self, statistic: str) -> tuple[float, float]:
        """Percentile interval of ``"oracle"``, ``"best"`` or ``"gap"``."""
        low, high = percentile_interval(getattr(self, statistic), self.level)
        return float(low), float(high)


def oracle_bootstrap(
    correct: np.ndarray, n_boot: int = N_BOOT, *, level: float = LEVEL
) -> OracleBootstrap:
    """:class:`OracleBootstrap` of per-size correctness ``bool [G, N]`` (shared resamples)."""
    c = np.asarray(correct, dtype=bool)
    boot: Bootstrap = bootstrap_means(np.vstack([c, c.any(axis=0)]), n_boot, level=level)
    best = boot.replicates[:-1].max(axis=0)
    oracle = boot.replicates[-1]
    return OracleBootstrap(oracle=oracle, best=best, gap=oracle - best, level=level)


def _predictions_of(
    scores: np.ndarray, labels: np.ndarray, nesting: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Predicted classes ``[G, N]`` from scores ``[G, N, C]``, or given as ``int [G, N]``."""
    scores_arr = scores if hasattr(scores, "shape") else np.asarray(scores)
    if scores_arr.ndim != 2 or not np.issubdtype(scores_arr.dtype, np.integer):
        scores_arr, labels, sizes = check_scores(scores_arr, labels, nesting)
        return predictions(scores_arr), labels, sizes
    sizes = check_nesting(nesting)
    labels = check_labels(labels)
    if scores_arr.shape != (len(sizes), labels.shape[0]):
        raise ValueError(
            f"predicted classes must have shape [len(nesting), N] = [{len(sizes)}, "
            f"{labels.shape[0]}] with labels [N], got {scores_arr.shape} and {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("no samples: labels is empty")
    return np.asarray(scores_arr), labels, sizes


def first_correct_index(correct: np.ndarray) -> np.ndarray:
    """Index of the first size that is correct per sample; ``G`` where none is."""
    g = correct.shape[0]
    # Weight size i by G - i and take the max: a reduction along the size axis runs row
    # by row over contiguous memory, unlike an argmax down that axis.
    weight = np.arange(g, 0, -1, dtype=np.min_scalar_type(g))[:, None]
    return g - (np.asarray(correct, dtype=bool) * weight).max(axis=0).astype(np.int64)


def majority_vote(preds: np.ndarray) -> np.ndarray:
    """The class predicted by most sizes per sample, ``[N]``.

    Ties go to the class predicted by the largest of the tied sizes (the most accurate
    head in expectation), which makes the vote deterministic.
    """
    preds = np.asarray(preds)
    g = preds.shape[0]
    # Narrow class ids cut the memory traffic of the G x G comparisons several-fold.
    small = preds.astype(np.min_scalar_type(int(preds.max()))) if preds.min() >= 0 else preds
    key_type = np.min_scalar_type(g * (g + 1))
    votes = np.zeros(preds.shape, dtype=key_type)
    for row in small:  # votes[i, n]: how many sizes agree with size i
        votes += small == row
    # votes * G + i is largest for the most votes, then for the largest size among ties.
    winner = (votes * key_type.type(g) + np.arange(g, dtype=key_type)[:, None]).max(axis=0) % g
    return np.take_along_axis(preds, winner[None, :].astype(np.intp), axis=0)[0]


def oracle_summary(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    model: str = "MRL",
    eval_set: str = "test",
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Oracle metrics for one model on one eval set (paper Tables 22-23), one row.

    Columns: ``model, eval_set, n_samples, oracle_accuracy, best_size, best_accuracy,
    largest_size_accuracy, oracle_gap`` (oracle minus best single size, the headline of
    "disagreement across dimensions"), ``never_correct, oracle_expected_size,
    majority_vote_accuracy``, and the bootstrap intervals over the samples
    (:func:`oracle_bootstrap`, ``n_boot`` resamples) ``oracle_accuracy_ci_low/_high``,
    ``best_accuracy_ci_low/_high`` and ``oracle_gap_ci_low/_high``.

    The oracle routes each sample to the smallest size that is correct; a sample no size
    gets right is routed to the largest size, as in the authors' oracle notebook, so
    ``oracle_expected_size`` counts it there.
    """
    preds, labels, sizes = _predictions_of(scores, labels, nesting)
    correct = preds == labels[None, :]
    per_size = np.count_nonzero(correct, axis=1) / labels.size
    best = int(per_size.argmax())
    first = first_correct_index(correct)
    routed = np.minimum(first, len(sizes) - 1)
    oracle_acc = np.count_nonzero(first < len(sizes)) / labels.size
    row = {
        "model": model,
        "eval_set": eval_set,
        "n_samples": int(labels.size),
        "oracle_accuracy": oracle_acc,
        "best_size": sizes[best],
        "best_accuracy": float(per_size[best]),
        "largest_size_accuracy": float(per_size[-1]),
        "oracle_gap": oracle_acc - float(per_size[best]),
        "never_correct": 1.0 - oracle_acc,
        "oracle_expected_size": float(np.asarray(sizes, dtype=float)[routed].mean()),
        "majority_vote_accuracy": float((majority_vote(preds) == labels).mean()),
    }
    boot = oracle_bootstrap(correct, n_boot)
    for name, statistic in [("oracle_accuracy", "oracle"), ("best_accuracy", "best")]:
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = boot.interval(statistic)
    row["oracle_gap_ci_low"], row["oracle_gap_ci_high"] = boot.interval("gap")
    return pd.DataFrame([row])


def first_correct_shares(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    model: str = "MRL",
    eval_set: str = "test",
) -> pd.DataFrame:
    """Share of samples first correct at each size, plus the never-correct share (Table 22).

    Columns: ``model, eval_set, first_correct`` (the size as text, or ``"never"``),
    ``truncate_dim`` (nullable int, missing for never), ``share``. Shares sum to 1.
    """
    preds, labels, sizes = _predictions_of(scores, labels, nesting)
    correct = preds == labels[None, :]
    counts = np.bincount(first_correct_index(correct), minlength=len(sizes) + 1)
    return pd.DataFrame(
        {
            "model": model,
            "eval_set": eval_set,
            "first_correct": [str(m) for m in sizes] + [NEVER],
            "truncate_dim": pd.array([*sizes, None], dtype="Int64"),
            "share": counts / correct.shape[1],
        }
    )


def first_correct_table(shares: pd.DataFrame) -> pd.DataFrame:
    """:func:`first_correct_shares` rows of one model as a table: one row per first-correct
    size (then "never"), one column per eval set."""
    if shares["model"].nunique() != 1:
        raise ValueError("first_correct_table shows one model: filter the shares first")
    wide = shares.pivot(index="first_correct", columns="eval_set", values="share")
    wide = wide.loc[shares["first_correct"].unique(), shares["eval_set"].unique()]
    wide.columns.name = None
    return wide
