"""Figures of the superclass and per-class tables (paper Figures 10-12, Appendix J).

Every figure plots a table of :mod:`mrl_analysis.superclass.metrics` or
:mod:`mrl_analysis.superclass.per_class`; sizes lie on the workbench's log-2 size axis and
fractions are shown as percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrl_analysis.core.checks import check_int
from mrl_analysis.figures.style import SIZE_TITLE, percent_axis, size_axis, style
from mrl_analysis.superclass.per_class import TRENDS, relative_accuracy_outliers

#: Panels per row of :func:`relative_accuracy_figure`, the height of one row of panels and
#: of the title and axis titles around them (px).
_PANEL_COLUMNS = 3
_PANEL_HEIGHT = 280
_HEIGHT_EXTRA = 160


def size_lines_figure(
    table: pd.DataFrame,
    y: str,
    *,
    color: str = "model",
    title: str | None = None,
    y_title: str | None = None,
    percent: bool = True,
) -> go.Figure:
    """Lines of ``y`` against ``truncate_dim`` (the size axis), one per ``color`` value, with
    the bootstrap interval as error bars when the table has ``<y>_ci_low`` /
    ``<y>_ci_high``; the shared shape of the superclass figures."""
    data = table.sort_values("truncate_dim")
    bars = {}
    if {f"{y}_ci_low", f"{y}_ci_high"} <= set(data.columns):
        data = data.assign(
            _above=data[f"{y}_ci_high"] - data[y], _below=data[y] - data[f"{y}_ci_low"]
        )
        bars = {"error_y": "_above", "error_y_minus": "_below"}
    fig = px.line(data, x="truncate_dim", y=y, color=color, markers=True, **bars)
    fig.update_traces(error_y={"thickness": 1.2, "width": 3})
    fig.update_layout(legend_title_text="")  # the names say what they are
    size_axis(fig, table["truncate_dim"].unique())
    y_title = y_title or y.replace("_", " ").capitalize()
    if percent:
        percent_axis(fig, y_title)
    else:
        fig.update_yaxes(title_text=y_title)
    return style(fig, title)


def superclass_accuracy_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Superclass accuracy vs size, one line per model (MRL vs FF; Figure 10)."""
    return size_lines_figure(
        table,
        "superclass_accuracy",
        title=title or "Superclass Accuracy Across Representation Sizes",
        y_title="Superclass accuracy",
    )


def per_superclass_figure(
    table: pd.DataFrame,
    metric: str = "within_superclass_accuracy",
    superclasses: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """One line per superclass (Figure 11) from
    :func:`~mrl_analysis.superclass.metrics.per_superclass_accuracy`.

    The table should hold one model; ``superclasses`` picks which lines to draw.
    """
    if table["model"].nunique() > 1:
        raise ValueError("per_superclass_figure draws one model: filter the table first")
    if superclasses is not None:
        table = table[table["superclass"].isin(superclasses)]
    return size_lines_figure(
        table,
        metric,
        color="superclass",
        title=title
        or f"Per-Superclass {metric.replace('_', ' ').title()} ({table['model'].iloc[0]})",
    )


def within_superclass_error_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Share of fine-grained errors that stay in the true superclass, per size and model."""
    return size_lines_figure(
        table,
        "within_superclass_error_share",
        title=title or "Fine-Grained Errors That Stay Inside the True Superclass",
        y_title="Share of errors within the superclass",
    )


def per_class_accuracy_figure(table: pd.DataFrame, value: str = "accuracy") -> go.Figure:
    """Classes × sizes heatmap of ``value`` from
    :func:`~mrl_analysis.superclass.per_class.per_class_accuracy` (one model)."""
    if table["model"].nunique() != 1:
        raise ValueError("per_class_accuracy_figure draws one model: filter the table first")
    wide = table.pivot(index="class_name", columns="truncate_dim", values=value)
    wide = wide.loc[table.drop_duplicates("class_index").sort_values("class_index")["class_name"]]
    wide.columns = [str(m) for m in wide.columns]
    fig = px.imshow(
        wide,
        color_continuous_scale="Viridis",
        zmin=0 if value == "accuracy" else None,
        zmax=1 if value == "accuracy" else None,
        text_auto=".0%" if len(wide) <= 40 else False,
        aspect="auto",
        labels={"x": SIZE_TITLE, "y": "Class", "color": value.replace("_", " ").capitalize()},
    )
    fig.update_layout(height=max(400, 28 * len(wide) + 150))
    fig.update_coloraxes(colorbar_tickformat=".0%")
    what = value.replace("_", " ").title()
    return style(fig, f"Per-Class {what} Across Sizes ({table['model'].iloc[0]})")


def trend_counts_figure(counts: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars of :func:`~mrl_analysis.superclass.per_class.trend_counts`, MRL vs FF."""
    fig = px.bar(
        counts,
        x="trend",
        y="n_classes",
        color="model",
        barmode="group",
        category_orders={"trend": list(TRENDS)},
        labels={"n_classes": "Number of classes", "trend": "Per-class accuracy trend", "model": ""},
    )
    return style(fig, title or "Per-Class Accuracy Trends Across Representation Sizes")


def relative_accuracy_figure(
    table: pd.DataFrame,
    sizes: Sequence[int] | None = None,
    highlight: Sequence[str] | None = None,
    n_outliers: int = 1,
    nbins: int = 20,
    width: int | None = None,
) -> go.Figure:
    """Histograms of per-class relative accuracy, one panel per size (Figure 12).

    ``sizes`` defaults to every size but the reference; panels wrap after three, each row
    ``_PANEL_HEIGHT`` px high; the width follows the page unless ``width`` (px) is given.
    All panels share one grid of ``nbins`` bins (:func:`share_histogram_bins`) and one x
    range, with a dotted line at "no change". Classes in ``highlight`` (default: the
    :func:`~mrl_analysis.superclass.per_class.relative_accuracy_outliers`) are marked with
    an ``x`` in a band below the bars and named under it, names spread apart
    (:func:`spread_marker_labels`), so no name covers a bar.
    """
    if table["model"].nunique() > 1:
        raise ValueError("relative_accuracy_figure draws one model: filter the table first")
    if sizes is None:
        others = table["truncate_dim"] != table["reference_size"]
        sizes = sorted(table.loc[others, "truncate_dim"].unique())
    sizes = [check_int(m, "sizes entry") for m in sizes]
    model = table["model"].iloc[0] if len(table) else "model"
    if not sizes:  # a single-size model (e.g. only FF-512): nothing to compare with
        fig = go.Figure()
        fig.add_annotation(
            text="only the reference size: no smaller size to compare with",
            showarrow=False,
            xref="paper",
            yref="paper",
        )
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        return style(fig, f"Per-Class Accuracy Relative to {model}: One Size Only")
    if highlight is None:
        highlight = relative_accuracy_outliers(table, n_outliers, sizes)["class_name"].tolist()
    reference = int(table["reference_size"].iloc[0])
    cols = min(_PANEL_COLUMNS, len(sizes))
    rows = -(-len(sizes) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[f"d = {m}" for m in sizes],
        vertical_spacing=min(0.12, 0.5 / rows),
        horizontal_spacing=0.04,
    )
    shown = table[table["truncate_dim"].isin(sizes)]
    edges = np.histogram_bin_edges(shown["relative_accuracy"].to_numpy(float), bins=nbins)
    top = max(
        int(np.histogram(part["relative_accuracy"], edges)[0].max())
        for _, part in shown.groupby("truncate_dim")
    )
    band = 0.45 * top  # below the bars: the marked classes and their names
    for i, m in enumerate(sizes):
        row, col = divmod(i, cols)
        part = table[table["truncate_dim"] == m]
        at = {"row": row + 1, "col": col + 1}
        fig.add_trace(
            go.Histogram(
                x=part["relative_accuracy"],
                marker={"color": "#5b8db8", "line": {"color": "white", "width": 0.5}},
                showlegend=False,
                hovertemplate="%{x}: %{y} classes<extra></extra>",
            ),
            **at,
        )
        fig.add_vline(x=0, line={"color": "#555", "dash": "dot", "width": 1}, **at)
        marked = part[part["class_name"].isin(highlight)]
        fig.add_trace(
            go.Scatter(
                x=marked["relative_accuracy"],
                y=np.full(len(marked), -0.3 * band),
                mode="markers+text",
                marker={"symbol": "x", "size": 10, "color": "crimson"},
                text=marked["class_name"],
                textfont={"size": 12, "color": "crimson"},
                cliponaxis=False,
                showlegend=False,
                hovertemplate="%{text}: %{x:.1%}<extra></extra>",
            ),
            **at,
        )
    # One x range for all panels, so the spread visibly shrinks as the size grows.
    fig.update_xaxes(matches="x")
    percent_axis(fig, "", axis="x")
    # One x title, under the middle panel of the last row: repeated, long titles collide.
    last = len(sizes) - (rows - 1) * cols
    middle = {"row": rows, "col": (last + 1) // 2}
    fig.update_xaxes(title_text=f"Accuracy change vs d = {reference}", **middle)
    step = max(1, int(np.ceil(top / 4)))
    fig.update_yaxes(range=[-band, 1.08 * top], tickvals=list(range(0, top + 1, step)))
    fig.update_yaxes(title_text="Classes", col=1)
    fig.update_layout(height=_HEIGHT_EXTRA + _PANEL_HEIGHT * rows)
    if width is not None:
        fig.update_layout(width=check_int(width, "width", low=100))
    style(fig, f"Per-Class Accuracy Relative to {model}-{reference}")
    return share_histogram_bins(spread_marker_labels(fig, side="bottom"), nbins)


def spread_marker_labels(fig: go.Figure, side: str = "top") -> go.Figure:
    """Set the names of labelled markers left of them in the left half (in x order) and
    right of them in the right half, so that names of nearby points (the outlier classes
    of a relative-accuracy panel) do not overlap; ``side`` ("top" or "bottom") puts them
    above or below the markers. Changes ``fig`` in place, returns it."""
    if side not in ("top", "bottom"):
        raise ValueError(f"side must be 'top' or 'bottom', got {side!r}")
    for trace in fig.data:
        if trace.type != "scatter" or trace.text is None or "text" not in (trace.mode or ""):
            continue
        n = len(trace.x)
        rank = np.argsort(np.argsort(np.asarray(trace.x, dtype=float), kind="stable"))
        trace.textposition = [
            f"{side} left"
            if 2 * r + 1 < n
            else f"{side} right"
            if 2 * r + 1 > n
            else f"{side} center"
            for r in rank
        ]
    return fig


def share_histogram_bins(fig: go.Figure, nbins: int = 20) -> go.Figure:
    """Give every histogram of ``fig`` the same ``nbins`` bins over the range of all their
    values. Plotly bins each trace over its own range, so a panel whose values barely
    spread gets hair-thin bars on an x axis shared with wider panels. In place; returns
    ``fig``."""
    hists = [t for t in fig.data if t.type == "histogram" and t.x is not None and len(t.x)]
    if not hists:
        return fig
    values = np.concatenate([np.asarray(t.x, dtype=float) for t in hists])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    size = (hi - lo) / nbins if hi > lo else 1.0
    # The end is pushed past the maximum so that it falls inside the last bin.
    for t in hists:
        t.update(xbins={"start": lo, "end": hi + size * 1e-6, "size": size})
    return fig
