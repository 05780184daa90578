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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.model_selection import ShuffleSplit

from mrl_analysis.routing.oracle import check_nesting, check_scores

DEFAULT_GRID = np.linspace(0.1, 1.0, 100)
HeadKind = Literal["mrl", "mrl-e"]


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
            "pass cache.probabilities() or scipy.special.softmax(logits, axis=-1)"
        )
    return conf, correct


def _grid(grid: Sequence[float] | None) -> np.ndarray:
    t = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0):
        raise ValueError("grid must be a non-empty, strictly increasing 1-D list of thresholds")
    return t


def _check_reduced(confidence: np.ndarray, correct: np.ndarray, nesting: Sequence[int]) -> list:
    sizes = check_nesting(nesting)
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
    kind: HeadKind,
    num_classes: int | None,
) -> dict[str, np.ndarray]:
    """Metrics ``[G-1, S]`` for every cap (sizes 1..G-1) from uncapped stops ``[S, N]``.

    Only samples with ``evaluated [S, N]`` count. Per split, a histogram of stop indices
    gives every cap at once: a cap at ``K`` keeps the samples stopping below ``K`` and
    sends the rest to ``K``.
    """
    if kind not in ("mrl", "mrl-e"):
        raise ValueError(f"kind must be 'mrl' (one head per size) or 'mrl-e', got {kind!r}")
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
    kind: HeadKind = "mrl",
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
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
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
        """Mean and std over splits per cap (paper Table 3): ``<metric>_mean/_std``."""
        metrics = [c for c in self.results.columns if c not in ("split", "max_size")]
        return mean_std(self.results, "max_size", metrics, self.model)

    def points(self, method: str | None = None) -> pd.DataFrame:
        """Rows for the accuracy-vs-size plane (see :func:`tradeoff_figure`)."""
        s = self.summary()
        return summary_points(s, method or self.model, [f"cap {m}" for m in s["max_size"]])


def mean_std(results: pd.DataFrame, by: str, metrics: Sequence[str], model: str) -> pd.DataFrame:
    """Mean and std over splits of ``metrics`` per value of ``by``: ``<metric>_mean/_std``."""
    table = results.groupby(by)[list(metrics)].agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
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
        }
    )


def cascade_study_reduced(
    confidence: np.ndarray,
    correct: np.ndarray,
    nesting: Sequence[int],
    *,
    n_splits: int = 30,
    holdout: int | float = 0.2,
    grid: Sequence[float] | None = None,
    kind: HeadKind = "mrl",
    num_classes: int | None = None,
    seed: int = 0,
    model: str = "MRL-AC",
) -> CascadeStudy:
    """:func:`cascade_study` on already reduced ``confidence`` / ``correct`` ``[G, N]``."""
    sizes = _check_reduced(confidence, correct, nesting)
    t = _grid(grid)
    held, evaluate = holdout_splits(confidence.shape[1], n_splits, holdout, seed)
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
    n_splits: int = 30,
    holdout: int | float = 0.2,
    grid: Sequence[float] | None = None,
    kind: HeadKind = "mrl",
    seed: int = 0,
    model: str = "MRL-AC",
) -> CascadeStudy:
    """The paper's cascade study: thresholds learned on ``holdout`` samples, evaluated on
    the rest, repeated over ``n_splits`` random splits, at every cap (Table 3)."""
    conf, correct = confidence_and_correctness(
        probabilities, labels, nesting, tta_probabilities=tta_probabilities
    )
    return cascade_study_reduced(
        conf,
        correct,
        nesting,
        n_splits=n_splits,
        holdout=holdout,
        grid=grid,
        kind=kind,
        num_classes=probabilities.shape[2],
        seed=seed,
        model=model,
    )


def single_size_points(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Plane rows from per-size top-1 tables: :func:`mrl_analysis.routing.oracle.accuracy_by_size`
    (``accuracy`` as a fraction) or :func:`mrl_analysis.accuracy.metrics.linear_accuracy`
    (long format, ``metric == "top1"``, ``value`` in %)."""
    if "metric" in accuracy.columns:
        accuracy = accuracy[accuracy["metric"] == "top1"].assign(
            accuracy=lambda t: t["value"] / 100.0
        )
    return pd.DataFrame(
        {
            "method": accuracy["model"].to_numpy(),
            "label": [f"d = {m}" for m in accuracy["truncate_dim"]],
            "expected_size": accuracy["truncate_dim"].to_numpy(dtype=float),
            "expected_size_std": np.nan,
            "expected_cumulative_size": accuracy["truncate_dim"].to_numpy(dtype=float),
            "accuracy": accuracy["accuracy"].to_numpy(),
            "accuracy_std": np.nan,
        }
    )


def oracle_points(oracle: pd.DataFrame, method: str = "oracle") -> pd.DataFrame:
    """Plane rows from :func:`mrl_analysis.routing.oracle.oracle_summary` tables."""
    return pd.DataFrame(
        {
            "method": method,
            "label": oracle["model"].astype(str) + " oracle",
            "expected_size": oracle["oracle_expected_size"].to_numpy(),
            "expected_size_std": np.nan,
            "expected_cumulative_size": np.nan,
            "accuracy": oracle["oracle_accuracy"].to_numpy(),
            "accuracy_std": np.nan,
        }
    )


def size_reduction(
    points: pd.DataFrame, curve: str, baseline: str, tolerance: float = 0.0
) -> pd.DataFrame:
    """For each ``baseline`` point, the cheapest ``curve`` point at least as accurate.

    ``tolerance`` (accuracy, e.g. 0.001 = 0.1 points) loosens "as accurate". Columns:
    ``baseline_size, baseline_accuracy, matched_size, matched_accuracy, size_ratio``
    (baseline size / matched expected size; NaN where the curve never gets there) and
    ``baseline_dominated``: a smaller baseline point is at least as accurate, so a ratio
    against this one overstates the saving (say FF-512 below FF-8).
    """
    cur = points[points["method"] == curve].sort_values("expected_size")
    base = points[points["method"] == baseline].sort_values("expected_size")
    if cur.empty or base.empty:
        raise ValueError(f"points need rows for method {curve!r} and {baseline!r}")
    acc, size = cur["accuracy"].to_numpy(), cur["expected_size"].to_numpy()
    reach = acc[None, :] >= base["accuracy"].to_numpy()[:, None] - tolerance
    first = reach.argmax(axis=1)
    found = reach.any(axis=1)
    matched_size = np.where(found, size[first], np.nan)
    base_acc = base["accuracy"].to_numpy()
    best_smaller = np.maximum.accumulate(np.concatenate([[-np.inf], base_acc[:-1]]))
    return pd.DataFrame(
        {
            "curve": curve,
            "baseline": baseline,
            "baseline_size": base["expected_size"].to_numpy(),
            "baseline_accuracy": base["accuracy"].to_numpy(),
            "matched_size": matched_size,
            "matched_accuracy": np.where(found, acc[first], np.nan),
            "size_ratio": base["expected_size"].to_numpy() / matched_size,
            "baseline_dominated": best_smaller >= base_acc,
        }
    )


def tradeoff_figure(
    points: pd.DataFrame,
    *,
    x: str = "expected_size",
    title: str = "Accuracy vs expected representation size",
) -> go.Figure:
    """Accuracy against (expected) size, one trace per ``method``, std as error bars.

    Methods with a single row (e.g. the oracle) are drawn as stars.
    """
    fig = go.Figure()
    for method, part in points.groupby("method", sort=False):
        part = part.sort_values(x)
        single = len(part) == 1
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part["accuracy"],
                name=str(method),
                mode="markers" if single else "lines+markers",
                marker={"symbol": "star", "size": 14} if single else {"size": 7},
                text=part["label"],
                hovertemplate="%{text}<br>size %{x:.1f}<br>accuracy %{y:.2%}<extra></extra>",
                error_y={"type": "data", "array": part["accuracy_std"], "visible": True}
                if part["accuracy_std"].notna().any()
                else None,
                error_x={"type": "data", "array": part[f"{x}_std"], "visible": True}
                if f"{x}_std" in part and part[f"{x}_std"].notna().any()
                else None,
            )
        )
    fig.update_xaxes(type="log", title_text=x.replace("_", " "))
    fig.update_yaxes(title_text="top-1 accuracy", tickformat=".1%")
    # Legend below the plot: the right-hand side holds the annotated large-size points.
    fig.update_layout(
        title=title, legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0}
    )
    return fig


def cascade_figure(
    points: pd.DataFrame,
    *,
    curve: str = "MRL-AC",
    baseline: str = "FF",
    tolerance: float = 0.0,
    x: str = "expected_size",
) -> go.Figure:
    """Figure 6: the cascade curve against single-size points, annotated with the
    largest computed "same accuracy at k× smaller size" over the ``baseline`` points that
    no smaller baseline point matches (see :func:`size_reduction`)."""
    fig = tradeoff_figure(points, x=x, title="Adaptive classification (MRL cascades)")
    if x != "expected_size" or baseline not in set(points["method"]):
        return fig
    red = size_reduction(points, curve, baseline, tolerance).dropna(subset=["size_ratio"])
    red = red[~red["baseline_dominated"]]
    if red.empty:
        return fig
    best = red.loc[red["size_ratio"].idxmax()]
    # The text sits in a boxed label in the lower right corner, clear of the curves; the
    # arrow alone joins the baseline point to the matching cascade point.
    fig.add_annotation(
        text=(
            f"same accuracy as {baseline}-{best['baseline_size']:.0f} at "
            f"{best['size_ratio']:.1f}× smaller size (~{best['matched_size']:.0f})"
        ),
        xref="paper",
        yref="paper",
        x=0.98,
        y=0.04,
        xanchor="right",
        yanchor="bottom",
        showarrow=False,
        bgcolor="rgba(255, 255, 255, 0.85)",
        bordercolor="#444",
        borderwidth=1,
    )
    fig.add_annotation(
        x=np.log10(best["matched_size"]),
        y=best["matched_accuracy"],
        ax=np.log10(best["baseline_size"]),
        ay=best["baseline_accuracy"],
        axref="x",
        ayref="y",
        showarrow=True,
        arrowhead=2,
        text="",
    )
    return fig
