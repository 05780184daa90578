"""The numbers notebook 03 states, as small tidy tables built from the study's tables.

Every function returns one row per number: ``headline`` (a stable key), ``subject`` (the
model, cascade or eval set it is about), ``value`` (fractions for accuracies and shares,
points as fractions too: 0.01 = one point; dims for sizes; the size ratio for
reductions) and ``text``, the sentence that states it. Notebooks print ``text``; tests
check ``value``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrl_analysis.routing.oracle import NEVER
from mrl_analysis.routing.tradeoff import best_reduction, size_factor_text

COLUMNS = ["headline", "subject", "value", "text"]


def _table(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype({"value": float})


def _interval(row: object, column: str, *, points: bool = False, what: str = "95% interval") -> str:
    """`` (95% interval 76.3–77.9%)`` from ``<column>_ci_low/_high`` of ``row``; empty when
    the row has none. ``points``: a difference, written in accuracy points."""
    low = getattr(row, f"{column}_ci_low", np.nan)
    high = getattr(row, f"{column}_ci_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    if points:
        return f" ({what} {100 * low:.2f} to {100 * high:.2f} points)"
    return f" ({what} {100 * low:.2f}–{100 * high:.2f}%)"


def _one_model(table: pd.DataFrame, model: str, what: str) -> pd.DataFrame:
    part = table[table["model"] == model]
    if part.empty:
        raise ValueError(f"no {what} rows for model {model!r}; the table has {set(table.model)}")
    return part


def oracle_headlines(oracle: pd.DataFrame, shares: pd.DataFrame, model: str) -> pd.DataFrame:
    """The oracle of ``model`` on every eval set (paper Tables 22-23).

    ``oracle`` / ``shares``: :func:`~mrl_analysis.routing.study.oracle_tables`. Headlines
    per eval set: ``oracle_accuracy``, ``best_accuracy`` (of the best single size),
    ``oracle_gap``, ``never_correct``, ``oracle_expected_size`` (never-correct samples
    routed to the largest size), ``smallest_correct_size`` (mean over the samples some size
    gets right) and ``majority_vote_accuracy``.
    """
    rows = []
    shares = _one_model(shares, model, "first-correct")
    for r in _one_model(oracle, model, "oracle").itertuples():
        e = r.eval_set
        part = shares[(shares["eval_set"] == e) & (shares["first_correct"] != NEVER)]
        weight = part["share"].to_numpy(dtype=float)
        dims = part["truncate_dim"].to_numpy(dtype=float)
        smallest = float(dims @ weight / weight.sum()) if weight.sum() > 0 else np.nan
        rows += [
            (
                "oracle_accuracy",
                e,
                r.oracle_accuracy,
                f"{e}: {model}'s oracle (some size right) gets {r.oracle_accuracy:.2%} right"
                + _interval(r, "oracle_accuracy"),
            ),
            (
                "best_accuracy",
                e,
                r.best_accuracy,
                f"{e}: its best single size, d = {r.best_size}, gets {r.best_accuracy:.2%}"
                + _interval(r, "best_accuracy"),
            ),
            (
                "oracle_gap",
                e,
                r.oracle_gap,
                f"{e}: the oracle is {100 * r.oracle_gap:.2f} points above the best single size"
                + _interval(r, "oracle_gap", points=True),
            ),
            (
                "never_correct",
                e,
                r.never_correct,
                f"{e}: {r.never_correct:.2%} of the samples are wrong at every size",
            ),
            (
                "oracle_expected_size",
                e,
                r.oracle_expected_size,
                f"{e}: routing each sample to its smallest correct size needs "
                f"{r.oracle_expected_size:.1f} dims on average (the never-correct ones at the "
                "largest size)",
            ),
            (
                "smallest_correct_size",
                e,
                smallest,
                f"{e}: over the samples some size gets right, the smallest correct size "
                f"averages {smallest:.1f} dims",
            ),
            (
                "majority_vote_accuracy",
                e,
                r.majority_vote_accuracy,
                f"{e}: a majority vote over the sizes gets {r.majority_vote_accuracy:.2%}",
            ),
        ]
    return _table(rows)


def first_correct_headlines(shares: pd.DataFrame, model: str, eval_set: str) -> pd.DataFrame:
    """Where ``model``'s samples are first right on ``eval_set`` (paper Table 22):
    ``right_at_smallest``, ``needs_larger_size`` and ``never_right`` (shares summing to 1)."""
    part = _one_model(shares, model, "first-correct")
    part = part[part["eval_set"] == eval_set]
    if part.empty:
        raise ValueError(f"no first-correct rows for eval set {eval_set!r}")
    share = part.set_index("first_correct")["share"]
    smallest = part["first_correct"].iloc[0]
    at_smallest, never = float(share[smallest]), float(share[NEVER])
    larger = float(share.drop([smallest, NEVER]).sum())
    return _table(
        [
            (
                "right_at_smallest",
                eval_set,
                at_smallest,
                f"On {eval_set}, {at_smallest:.1%} of the samples are already right at "
                f"{smallest} dim(s)",
            ),
            (
                "needs_larger_size",
                eval_set,
                larger,
                f"On {eval_set}, {larger:.1%} need a larger size",
            ),
            ("never_right", eval_set, never, f"On {eval_set}, {never:.1%} are never right"),
        ]
    )


def cascade_headlines(
    best: pd.DataFrame, stalled: pd.DataFrame, *, min_share: float = 0.5
) -> pd.DataFrame:
    """Each cascade at its best cap, and where its thresholds stall (paper Table 3).

    ``best``: :func:`~mrl_analysis.routing.cascade.best_cap` of the summaries; ``stalled``:
    :func:`~mrl_analysis.routing.cascade.lowest_thresholds`, reported where at least
    ``min_share`` of the splits stall. Headlines: ``best_cap_accuracy``,
    ``best_cap_expected_size``, ``best_cap_head_macs`` per cascade and
    ``stalled_threshold`` (the share of splits) per cascade × size.
    """
    rows = []
    for r in best.itertuples():
        rows += [
            (
                "best_cap_accuracy",
                r.model,
                r.accuracy_mean,
                f"{r.model}: best accuracy {r.accuracy_mean:.2%} ± {r.accuracy_std:.2%} "
                f"(cap {r.max_size:.0f})" + _interval(r, "accuracy", what="95% of splits in"),
            ),
            (
                "best_cap_expected_size",
                r.model,
                r.expected_size_mean,
                f"{r.model}: at its best cap the expected size is {r.expected_size_mean:.1f} ± "
                f"{r.expected_size_std:.1f} dims",
            ),
            (
                "best_cap_head_macs",
                r.model,
                r.expected_head_macs_mean,
                f"{r.model}: {r.expected_head_macs_mean:.0f} head multiply-adds per sample at its "
                "best cap",
            ),
        ]
    for r in stalled[stalled["share_of_splits"] >= min_share].itertuples():
        total = round(r.n_splits / r.share_of_splits)
        rows.append(
            (
                "stalled_threshold",
                f"{r.model} d = {r.truncate_dim}",
                r.share_of_splits,
                f"{r.model}: the learned threshold at d = {r.truncate_dim} is the grid's lowest "
                f"in {r.n_splits}/{total} splits: moving up never paid off on their held-out "
                "samples, so the cascade stops there",
            )
        )
    return _table(rows)


def reduction_headlines(reductions: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """ "As accurate as FF-k at a k× smaller size" per cascade (paper Figure 6).

    ``reductions``: :func:`~mrl_analysis.routing.tradeoff.size_reduction` tables of one
    baseline, concatenated over cascades (the first is the main one); ``best``:
    :func:`~mrl_analysis.routing.cascade.best_cap`. Headlines: ``size_reduction`` per
    cascade (baseline size / cascade's expected size at the largest reduction among the
    baseline points no smaller one matches; NaN where it reaches none; the text says "k×
    smaller" or "needs k× the size") and ``best_cap_vs_largest_baseline`` (the main
    cascade's best cap minus the largest baseline model, in points as a fraction).
    """
    if reductions.empty:
        raise ValueError("no size reductions given")
    curves = list(dict.fromkeys(reductions["curve"]))
    baseline = str(reductions["baseline"].iloc[0])
    rows = []
    for curve in curves:
        top = best_reduction(reductions[reductions["curve"] == curve])
        if top is None:
            rows.append(
                (
                    "size_reduction",
                    curve,
                    np.nan,
                    f"{curve} reaches the accuracy of no {baseline} model",
                )
            )
            continue
        rows.append(
            (
                "size_reduction",
                curve,
                top["size_ratio"],
                f"{curve} is as accurate as {baseline}-{top['baseline_size']:.0f} "
                f"({top['baseline_accuracy']:.2%}) at an expected size of "
                f"{top['matched_size']:.1f} dims: {size_factor_text(top['size_ratio'])}",
            )
        )
    main = reductions[reductions["curve"] == curves[0]]
    largest = main.loc[main["baseline_size"].idxmax()]
    best_row = best.set_index("model").loc[curves[0]]
    diff = float(best_row["accuracy_mean"] - largest["baseline_accuracy"])
    rows.append(
        (
            "best_cap_vs_largest_baseline",
            curves[0],
            diff,
            f"{curves[0]}'s best cap is {100 * diff:+.2f} points vs "
            f"{baseline}-{largest['baseline_size']:.0f} ({largest['baseline_accuracy']:.2%})",
        )
    )
    return _table(rows)


def router_headlines(
    oracle: pd.Series, cascade_best: pd.Series, router_summary: pd.DataFrame, match: pd.DataFrame
) -> pd.DataFrame:
    """The learned router against the cascade, the best single size and the oracle.

    ``oracle``: one :func:`~mrl_analysis.routing.oracle.oracle_summary` row;
    ``cascade_best``: the cascade's :func:`~mrl_analysis.routing.cascade.best_cap` row;
    ``router_summary``: ``RouterStudy.summary()``; ``match``:
    :func:`~mrl_analysis.routing.tradeoff.size_reduction` with the router as the curve and
    the cascade as the baseline. Headlines: ``best_single_accuracy``, ``oracle_accuracy``,
    ``cascade_vs_best_single`` and ``router_vs_best_single`` (points as fractions; the text
    gives the interval of its accuracy over splits when the summaries have one), and
    ``router_size_for_cascade_accuracy`` (cascade size / router size at the cascade's most
    accurate point the router reaches; NaN if none).
    """
    single = float(oracle["best_accuracy"])
    best_router = router_summary.loc[router_summary["accuracy_mean"].idxmax()]
    rows = [
        (
            "best_single_accuracy",
            str(oracle["model"]),
            single,
            f"Best single size: {single:.2%} (d = {oracle['best_size']})",
        ),
        (
            "oracle_accuracy",
            str(oracle["model"]),
            oracle["oracle_accuracy"],
            f"Oracle: {oracle['oracle_accuracy']:.2%}, {100 * oracle['oracle_gap']:.2f} points "
            "above the best single size",
        ),
    ]
    for key, name, row in [
        ("cascade_vs_best_single", str(cascade_best["model"]), cascade_best),
        ("router_vs_best_single", str(best_router["model"]), best_router),
    ]:
        diff = float(row["accuracy_mean"] - single)
        rows.append(
            (
                key,
                name,
                diff,
                f"{name} at its best: {row['accuracy_mean']:.2%} at an expected size of "
                f"{row['expected_size_mean']:.1f} dims, {100 * diff:+.2f} points vs the best "
                "single size" + _interval(row, "accuracy", what="95% of splits in"),
            )
        )
    found = match.dropna(subset=["size_ratio"])
    if found.empty:
        rows.append(
            (
                "router_size_for_cascade_accuracy",
                "router",
                np.nan,
                "The router never reaches the accuracy of the cascade's points",
            )
        )
    else:
        top = found.loc[found["baseline_accuracy"].idxmax()]
        rows.append(
            (
                "router_size_for_cascade_accuracy",
                str(top["curve"]),
                top["size_ratio"],
                f"To match the cascade's {top['baseline_accuracy']:.2%} (at "
                f"{top['baseline_size']:.1f} dims) the router uses {top['matched_size']:.1f} "
                f"dims: {size_factor_text(top['size_ratio'])}",
            )
        )
    return _table(rows)
