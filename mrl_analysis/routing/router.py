"""A learned size router, beyond the paper's threshold cascade (which leaves "a more
optimal routing policy" to future work, Appendix J).

The router looks only at the cheap heads (``input_sizes``, default the smallest size)
and picks one size per sample:

1. features per input size: max softmax probability, top-1 − top-2 margin and entropy,
   plus whether consecutive input sizes agree on the top-1 class;
2. for every nesting size ``m_g`` a logistic regression (scikit-learn, on standardized
   features) trained on the held-out split estimates ``P(correct at m_g | features)``;
3. each sample goes to ``argmax_g P_g − λ · m_g``: ``λ`` is the price of one dimension in
   accuracy, and sweeping it traces the accuracy-vs-expected-size curve (``λ = 0``:
   most likely correct size; large ``λ``: always the smallest).

Evaluated on the rest of the data over the same random splits as
:func:`mrl_analysis.routing.cascade.cascade_study` (one
:class:`~mrl_analysis.routing.cascade.SplitSettings`), so the router, the cascade and the
oracle share one plane (:func:`~mrl_analysis.routing.plots.router_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from mrl_analysis.core.checks import check_finite, check_int, check_nesting
from mrl_analysis.routing.cascade import (
    SplitSettings,
    confidence_and_correctness,
    mean_std,
    summary_points,
)

DEFAULT_COST_WEIGHTS = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 61)])
#: The router's default study: 10 of the cascade's random splits.
ROUTER_SETTINGS = SplitSettings(n_splits=10)


def _input_indices(nesting: list[int], input_sizes: Sequence[int] | None) -> list[int]:
    chosen = (
        [nesting[0]]
        if input_sizes is None
        else [check_int(m, "input_sizes entry") for m in input_sizes]
    )
    missing = [m for m in chosen if m not in nesting]
    if missing or not chosen:
        raise ValueError(f"input_sizes {chosen} must be non-empty and among nesting {nesting}")
    return sorted(nesting.index(m) for m in set(chosen))


def router_features(
    probabilities: np.ndarray,
    nesting: Sequence[int],
    input_sizes: Sequence[int] | None = None,
    *,
    tta_probabilities: np.ndarray | None = None,
) -> np.ndarray:
    """Router features ``[N, F]`` from the probabilities at ``input_sizes`` (see module doc)."""
    sizes = check_nesting(nesting)
    if probabilities.ndim != 3 or probabilities.shape[0] != len(sizes):
        raise ValueError(
            f"probabilities must be [len(nesting), N, C] = [{len(sizes)}, N, C], "
            f"got {probabilities.shape}"
        )
    idx = _input_indices(sizes, input_sizes)
    num_classes = probabilities.shape[2]
    columns, tops = [], []
    for g in idx:
        p = check_finite(np.asarray(probabilities[g], dtype=np.float32), "probabilities")
        if tta_probabilities is not None:
            tta = check_finite(np.asarray(tta_probabilities[g], np.float32), "tta_probabilities")
            p = (p + tta) * 0.5
        top2 = np.partition(p, num_classes - 2, axis=1)[:, -2:] if num_classes > 1 else p
        entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
        columns += [top2[:, -1], top2[:, -1] - top2[:, 0], entropy]
        tops.append(p.argmax(axis=1))
    columns += [(a == b).astype(np.float32) for a, b in zip(tops, tops[1:], strict=False)]
    return np.stack(columns, axis=1).astype(np.float64)


def _fit_predict(x_train: np.ndarray, y: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    if y.min() == y.max():  # one outcome only: logistic regression cannot fit, nor needs to
        return np.full(x_eval.shape[0], float(y[0]))
    clf = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky"))
    return clf.fit(x_train, y).predict_proba(x_eval)[:, 1]


@dataclass(frozen=True)
class RouterStudy:
    """Results of :func:`router_study`: one row per split × cost weight ``λ``
    (``split, cost_weight, accuracy, expected_size, expected_cumulative_size``)."""

    model: str
    results: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean, std and interval over splits per ``λ`` (see ``cascade.mean_std``)."""
        metrics = ["accuracy", "expected_size", "expected_cumulative_size"]
        return mean_std(self.results, "cost_weight", metrics, self.model)

    def points(self, method: str | None = None) -> pd.DataFrame:
        """Rows for the accuracy-vs-size plane (see :mod:`~mrl_analysis.routing.tradeoff`)."""
        s = self.summary()
        return summary_points(s, method or self.model, [f"λ = {w:.2g}" for w in s["cost_weight"]])


def router_study(
    probabilities: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    input_sizes: Sequence[int] | None = None,
    tta_probabilities: np.ndarray | None = None,
    settings: SplitSettings = ROUTER_SETTINGS,
    cost_weights: Sequence[float] | None = None,
    model: str = "router",
) -> RouterStudy:
    """Train the router on each held-out split and evaluate it on the rest at every ``λ``
    (``settings``: the splits; its threshold grid is not used).

    ``expected_cumulative_size`` counts every head evaluated: the input sizes plus the
    chosen size when it is not one of them.
    """
    _, correct = confidence_and_correctness(
        probabilities, labels, nesting, tta_probabilities=tta_probabilities
    )
    sizes = check_nesting(nesting)
    weights = np.asarray(DEFAULT_COST_WEIGHTS if cost_weights is None else cost_weights, float)
    if weights.ndim != 1 or weights.size == 0 or np.any(weights < 0):
        raise ValueError("cost_weights must be a non-empty 1-D list of values >= 0")
    idx = _input_indices(sizes, input_sizes)
    features = router_features(
        probabilities, sizes, [sizes[g] for g in idx], tta_probabilities=tta_probabilities
    )
    size_arr = np.asarray(sizes, dtype=np.float64)
    input_cost = size_arr[idx].sum()
    extra = np.where(np.isin(np.arange(len(sizes)), idx), 0.0, size_arr)
    held, evaluate = settings.splits(correct.shape[1])
    rows = []
    for s in tqdm(range(settings.n_splits), desc="router splits", leave=False):
        h, e = held[s], evaluate[s]
        prob = np.stack(
            [_fit_predict(features[h], correct[g, h], features[e]) for g in range(len(sizes))]
        )  # [G, n_e]
        utility = prob[None] - weights[:, None, None] * size_arr[None, :, None]
        choice = utility.argmax(axis=1)  # [L, n_e]; ties go to the smaller size
        rows.append(
            pd.DataFrame(
                {
                    "split": s,
                    "cost_weight": weights,
                    "accuracy": correct[choice, e[None, :]].mean(axis=1),
                    "expected_size": size_arr[choice].mean(axis=1),
                    "expected_cumulative_size": input_cost + extra[choice].mean(axis=1),
                }
            )
        )
    return RouterStudy(model=model, results=pd.concat(rows, ignore_index=True))
