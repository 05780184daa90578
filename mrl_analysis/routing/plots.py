"""Figures of the routing theme: first-correct shares and the accuracy-vs-cost plane.

Every figure uses the workbench template; accuracies (fractions) are shown as percent and
size axes are the library's log-2 size axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mrl_analysis.figures.style import percent_axis, size_axis, style
from mrl_analysis.routing.tradeoff import best_reduction, size_factor_text, size_reduction

#: x columns of the plane measured in dimensions (the others, e.g. multiply-adds, are not).
_SIZE_COLUMNS = {
    "expected_size": "Expected representation size (dims)",
    "expected_cumulative_size": "Expected cumulative size of the heads evaluated (dims)",
}
_X_TITLES = {"expected_head_macs": "Expected head multiply-adds per sample"}


def first_correct_figure(
    table: pd.DataFrame, color: str = "eval_set", title: str | None = None
) -> go.Figure:
    """Bars of :func:`~mrl_analysis.routing.oracle.first_correct_shares` (one bar group per
    size, then "never")."""
    order = list(dict.fromkeys(table["first_correct"]))
    fig = px.bar(
        table,
        x="first_correct",
        y="share",
        color=color,
        barmode="group",
        category_orders={"first_correct": order},
        labels={"first_correct": "First correct at size (dims)", "eval_set": "Eval set"},
    )
    percent_axis(fig, "Share of samples")
    return style(fig, title or "Samples First Classified Correctly at Each Size")


def _power_of_two_span(values: pd.Series) -> np.ndarray:
    """Powers of two from just below the smallest to just above the largest positive value."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.empty:
        return np.array([1])
    lo, hi = np.floor(np.log2(positive.min())), np.ceil(np.log2(positive.max()))
    return 2 ** np.arange(int(lo), int(hi) + 1)


def tradeoff_figure(
    points: pd.DataFrame,
    *,
    x: str = "expected_size",
    title: str = "Accuracy vs Expected Representation Size",
    zoom: Sequence[str] | None = None,
) -> go.Figure:
    """Accuracy against (expected) size, one trace per ``method``, with the accuracy's
    interval as error bars (over splits for cascades and routers, a bootstrap over the
    samples for single sizes and oracles; std where a table has no interval) and the
    size's std over splits as horizontal bars.

    ``points``: a :func:`~mrl_analysis.routing.tradeoff.tradeoff_points` table. Methods
    with a single row (e.g. the oracle) are drawn as stars. ``zoom``: methods to zoom on
    (:func:`zoom_tradeoff`).
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
                # A star at the top of a zoomed plot must not be cut in half.
                cliponaxis=not single,
                text=part["label"],
                hovertemplate="%{text}<br>size %{x:.1f}<br>accuracy %{y:.2%}<extra></extra>",
                error_y=_accuracy_bars(part),
                error_x={"type": "data", "array": part[f"{x}_std"], "visible": True}
                if f"{x}_std" in part and part[f"{x}_std"].notna().any()
                else None,
            )
        )
    if x in _SIZE_COLUMNS:
        size_axis(fig, _power_of_two_span(points[x]), title=_SIZE_COLUMNS[x])
    else:
        # A tick per power of ten (1k, 10k, …): plotly's default adds "2 5" labels between.
        fig.update_xaxes(
            type="log",
            dtick=1,
            tickformat="~s",
            title_text=_X_TITLES.get(x, x.replace("_", " ").capitalize()),
        )
    percent_axis(fig, "Top-1 accuracy", decimals=1)
    # Legend below the plot: the right-hand side holds the annotated large-size points.
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
    if zoom is not None:
        zoom_tradeoff(fig, points, zoom, x=x)
    return style(fig, title)


def _accuracy_bars(part: pd.DataFrame) -> dict | None:
    """Error bars of a plane trace: the interval when known, else the std, else none."""
    if {"accuracy_ci_low", "accuracy_ci_high"} <= set(part) and part[
        "accuracy_ci_low"
    ].notna().any():
        return {
            "type": "data",
            "symmetric": False,
            "array": (part["accuracy_ci_high"] - part["accuracy"]).to_numpy(),
            "arrayminus": (part["accuracy"] - part["accuracy_ci_low"]).to_numpy(),
        }
    if part["accuracy_std"].notna().any():
        return {"type": "data", "array": part["accuracy_std"].to_numpy()}
    return None


def cascade_figure(
    points: pd.DataFrame,
    *,
    curve: str = "MRL-AC",
    baseline: str = "FF",
    tolerance: float = 0.0,
    x: str = "expected_size",
    title: str = "Adaptive Classification (MRL Cascades)",
    zoom: Sequence[str] | None = None,
) -> go.Figure:
    """Figure 6: the cascade curve against single-size points, annotated with the
    largest computed "same accuracy at k× smaller size" over the ``baseline`` points that
    no smaller baseline point matches (:func:`~mrl_analysis.routing.tradeoff.size_reduction`;
    ``tolerance`` a fraction). ``zoom``: methods to zoom on (:func:`zoom_tradeoff`)."""
    fig = tradeoff_figure(points, x=x, title=title, zoom=zoom)
    if x != "expected_size" or baseline not in set(points["method"]):
        return fig
    best = best_reduction(size_reduction(points, curve, baseline, tolerance))
    if best is None:
        return fig
    # The text sits in a boxed label in the lower right corner, clear of the curves; the
    # arrow alone joins the baseline point to the matching cascade point.
    fig.add_annotation(
        text=(
            f"same accuracy as {baseline}-{best['baseline_size']:.0f} at "
            f"~{best['matched_size']:.0f} dims: {size_factor_text(best['size_ratio'])}"
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


def router_figure(
    points: pd.DataFrame,
    x: str = "expected_size",
    title: str = "Learned Router vs Threshold Cascade vs Oracle",
    zoom: Sequence[str] | None = None,
) -> go.Figure:
    """Router vs threshold cascade vs oracle (and single sizes) on the accuracy-vs-size
    plane; ``points`` concatenates their plane rows. The router's size std at one cost
    weight spans decades, so only accuracy std is drawn as error bars."""
    shown = points.assign(**{f"{x}_std": np.nan}) if f"{x}_std" in points else points
    return tradeoff_figure(shown, x=x, title=title, zoom=zoom)


def zoom_tradeoff(
    fig: go.Figure,
    points: pd.DataFrame,
    focus: Sequence[str],
    *,
    x: str = "expected_size",
    margin: float = 0.01,
) -> go.Figure:
    """Zoom a :func:`tradeoff_figure` of ``points`` on the methods ``focus``: y from their
    lowest accuracy − ``margin`` to the highest accuracy (or interval end) of any point + 2 ×
    ``margin``, room for its marker; the log
    x axis spans the points inside that y range, widened by a factor 1.3 each side. In
    place; returns ``fig``."""
    chosen = points[points["method"].isin(list(focus))]
    if chosen.empty:
        raise ValueError(f"no points for methods {list(focus)}; the table has {set(points.method)}")
    lo = float(chosen["accuracy"].min()) - margin
    # Room above the most accurate point for its marker and error bar (the oracle star).
    top = points["accuracy_ci_high"] if "accuracy_ci_high" in points else points["accuracy"]
    hi = float(np.nanmax([points["accuracy"].max(), top.max()])) + 2 * margin
    inside = points[(points["accuracy"] >= lo) & (points[x] > 0)][x].dropna()
    fig.update_yaxes(range=[lo, hi])
    if not inside.empty:
        fig.update_xaxes(range=np.log10([inside.min() / 1.3, inside.max() * 1.3]).tolist())
    return fig
