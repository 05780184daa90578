"""Figures of the few-shot and FLUID study (the only module of the theme importing plotly).

Every figure draws one of the theme's tidy tables (accuracies as fractions, shown as
percent); FF-k models join into one "FF" line (:func:`model_display_name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from mrl_analysis.core.checks import check_table
from mrl_analysis.core.kinds import model_display_name
from mrl_analysis.fewshot.fluid import CATEGORIES, GROUPS
from mrl_analysis.figures.style import percent_axis, size_axis, style

_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_GROUP_TITLES = {"all": "All classes", "pretrain": "Pretrain classes", "novel": "Novel classes"}


def _lines(table: pd.DataFrame, needed: set[str], source: str) -> pd.DataFrame:
    check_table(table, needed, source)
    return table.assign(line=table["model"].map(model_display_name))


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("rgb("):
        return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    h = color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _color(index: int) -> str:
    return qualitative.Plotly[index % len(qualitative.Plotly)]


def fewshot_figure(
    table: pd.DataFrame,
    title: str | None = None,
    *,
    shots: Sequence[int] | None = None,
    height: int = 600,
) -> go.Figure:
    """Few-shot accuracy vs size (log-2 x axis) with bands for the bootstrap intervals over
    episodes (``ci_low`` / ``ci_high``).

    One panel per way count, one colour per shot count (only ``shots`` if given), one dash
    style per line.
    """
    data = _lines(
        table,
        {"model", "truncate_dim", "shots", "ways", "accuracy", "ci_low", "ci_high"},
        "fewshot_accuracy",
    )
    if shots is not None:
        data = data[data["shots"].isin(list(shots))]
        if data.empty:
            raise ValueError(f"no rows with shots {list(shots)}; choose some of the table's")
    ways = sorted(data["ways"].unique())
    shot_counts = sorted(data["shots"].unique())
    lines = list(dict.fromkeys(data["line"]))
    colors = (
        sample_colorscale(
            "Viridis", [0.85 * i / max(1, len(shot_counts) - 1) for i in range(len(shot_counts))]
        )
        if len(shot_counts) > 1
        else [_color(0)]
    )
    fig = make_subplots(
        rows=1, cols=len(ways), subplot_titles=[f"{k}-way" for k in ways], shared_yaxes=True
    )
    for col, k in enumerate(ways, start=1):
        for s, n in enumerate(shot_counts):
            for li, name in enumerate(lines):
                rows = data[(data["ways"] == k) & (data["shots"] == n) & (data["line"] == name)]
                if rows.empty:
                    continue
                rows = rows.sort_values("truncate_dim")
                x = rows["truncate_dim"].tolist()
                lo, hi = rows["ci_low"].tolist(), rows["ci_high"].tolist()
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
                        customdata=rows[["ci_low", "ci_high"]].to_numpy(),
                        hovertemplate="m=%{x}: %{y:.1%} [%{customdata[0]:.1%}, "
                        "%{customdata[1]:.1%}]<extra>%{fullData.name}</extra>",
                    ),
                    row=1,
                    col=col,
                )
    size_axis(fig, data["truncate_dim"])
    percent_axis(fig, "Accuracy", col=1)
    fig.update_layout(height=height, legend={"orientation": "h", "y": -0.18, "x": 0})
    return style(fig, title or "Few-shot NCM accuracy vs representation size")


def saturation_figure(
    saturation: pd.DataFrame, title: str | None = None, *, tolerance: float | None = None
) -> go.Figure:
    """Saturation size vs shot count (log-2 y axis), one line per model, a panel per ways.

    ``tolerance`` (a fraction), when given, is named in the title.
    """
    check_table(saturation, {"model", "shots", "ways", "saturation_dim"}, "saturation_table")
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
                    # Lines often coincide (same saturation size): dashes keep each visible.
                    line={"color": _color(li), "dash": _DASHES[li % len(_DASHES)]},
                    marker={"size": 9 - 2 * (li % 3)},
                ),
                row=1,
                col=col,
            )
    # Ticks at the shot counts only: dtick=1 over 1..20 shots crowds the axis.
    shots = sorted(int(s) for s in saturation["shots"].unique())
    fig.update_xaxes(title_text="Shots per class", tickmode="array", tickvals=shots)
    dims = saturation[[c for c in ("saturation_dim", "largest_dim") if c in saturation]]
    size_axis(fig, dims.to_numpy().ravel(), axis="y", title="")
    fig.update_yaxes(title_text="Saturation size", col=1)
    title = title or "Smallest size within tolerance of the largest size's accuracy"
    if tolerance is not None:
        title = f"{title} (within {100 * tolerance:.1f} points)"
    return style(fig, title)


def fluid_heatmap_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Accuracy heat-map, size (rows) x category (columns), one panel per model line."""
    data = _lines(table, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    lines = list(dict.fromkeys(data["line"]))
    sizes = sorted(data["truncate_dim"].unique())
    cats = [c for c in CATEGORIES if c in set(data["category"])]
    fig = make_subplots(rows=1, cols=len(lines), subplot_titles=lines, shared_yaxes=True)
    for col, name in enumerate(lines, start=1):
        grid = (
            data[data["line"] == name]
            .pivot_table(index="truncate_dim", columns="category", values="accuracy")
            .reindex(index=sizes, columns=cats)
            .to_numpy()
        )
        fig.add_trace(
            go.Heatmap(
                z=grid,
                x=cats,
                y=[str(m) for m in sizes],
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                text=np.where(np.isnan(grid), "", np.char.mod("%.1f", 100 * grid)),
                texttemplate="%{text}",
                colorbar={"title": {"text": "Accuracy", "side": "right"}, "tickformat": ".0%"},
                showscale=col == len(lines),
                hovertemplate="m=%{y}, %{x}: %{z:.2%}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    # Sizes label the rows of a grid here, one row each: a categorical axis, not a size axis.
    fig.update_yaxes(title_text="Representation size", type="category", col=1)
    return style(fig, title or "FLUID accuracy per category and size (NCM)")


def fluid_bars_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars: a panel per category, sizes on x, one bar colour per model line; error
    bars show the bootstrap interval over the stream's samples when the table has one."""
    data = _lines(table, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    has_ci = {"ci_low", "ci_high"} <= set(data.columns)
    cats = [c for c in CATEGORIES if c in set(data["category"])]
    lines = list(dict.fromkeys(data["line"]))
    sizes = [str(m) for m in sorted(data["truncate_dim"].unique())]
    ncols = min(2, len(cats))
    nrows = -(-len(cats) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=cats, shared_yaxes=True)
    for i, cat in enumerate(cats):
        for li, name in enumerate(lines):
            rows = data[(data["category"] == cat) & (data["line"] == name)]
            rows = rows.sort_values("truncate_dim")
            errors = (
                {
                    "type": "data",
                    "symmetric": False,
                    "array": rows["ci_high"] - rows["accuracy"],
                    "arrayminus": rows["accuracy"] - rows["ci_low"],
                    "thickness": 1,
                    "width": 3,
                }
                if has_ci
                else None
            )
            fig.add_trace(
                go.Bar(
                    x=rows["truncate_dim"].astype(str),
                    y=rows["accuracy"],
                    error_y=errors,
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=i == 0,
                    marker_color=_color(li),
                ),
                row=i // ncols + 1,
                col=i % ncols + 1,
            )
    # Bars need one slot per size: a categorical axis in size order.
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=sizes)
    fig.update_yaxes(matches="y")  # one accuracy range in every panel, rows included
    percent_axis(fig, "", decimals=0)
    percent_axis(fig, "Accuracy", col=1)
    fig.update_layout(
        barmode="group", height=260 * nrows + 140, legend={"orientation": "h", "y": -0.08, "x": 0}
    )
    return style(fig, title or "FLUID accuracy per category (NCM)")


def learning_curves_figure(
    curves: pd.DataFrame,
    value: Literal["accuracy", "window_accuracy"] = "accuracy",
    title: str | None = None,
    *,
    height: int = 520,
) -> go.Figure:
    """Accuracy over the stream: a panel per group, a colour per size, a dash per model."""
    data = _lines(curves, {"model", "truncate_dim", "group", "step", value}, "fluid_learning_curve")
    groups = [g for g in GROUPS if g in set(data["group"])]
    sizes = sorted(data["truncate_dim"].unique())
    lines = list(dict.fromkeys(data["line"]))
    colors = sample_colorscale(
        "Viridis", [0.9 * i / max(1, len(sizes) - 1) for i in range(len(sizes))]
    )
    titles = [_GROUP_TITLES[g] for g in groups]
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=titles, shared_yaxes=True)
    for col, group in enumerate(groups, start=1):
        for s, m in enumerate(sizes):
            for li, name in enumerate(lines):
                rows = data[
                    (data["group"] == group) & (data["truncate_dim"] == m) & (data["line"] == name)
                ]
                if rows.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=rows["step"],
                        y=rows[value],
                        mode="lines",
                        name=f"{name}, m={m}",
                        legendgroup=f"{name}, m={m}",
                        showlegend=col == 1,
                        line={"color": colors[s], "dash": _DASHES[li % len(_DASHES)]},
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="Stream step")
    percent_axis(fig, "", decimals=0)
    label = "Cumulative accuracy" if value == "accuracy" else "Windowed accuracy"
    percent_axis(fig, label, col=1)
    fig.update_layout(height=height, legend={"orientation": "h", "y": -0.2, "x": 0})
    return style(fig, title or "FLUID learning curves")
