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

from mrl_analysis.figures.style import SIZE_TITLE, percent_axis, size_axis, style
from mrl_analysis.superclass.per_class import TRENDS, relative_accuracy_outliers

#: Panels per row of :func:`relative_accuracy_figure`, and the height of one row (px).
_PANEL_COLUMNS = 4
_PANEL_HEIGHT = 300


def size_lines_figure(
    table: pd.DataFrame,
    y: str,
    *,
    color: str = "model",
    title: str | None = None,
    y_title: str | None = None,
    percent: bool = True,
) -> go.Figure:
    """Lines of ``y`` against ``truncate_dim`` (the size axis), one per ``color`` value; the
    shared shape of the superclass figures."""
    fig = px.line(
        table.sort_values("truncate_dim"),
        x="truncate_dim",
        y=y,
        color=color,
        markers=True,
    )
    size_axis(fig, table["truncate_dim"].unique())
    y_title = y_title or y.replace("_", " ")
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
        title=title or "Superclass accuracy across representation sizes",
        y_title="superclass top-1 accuracy",
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
        title=title or f"Per-superclass {metric.replace('_', ' ')} ({table['model'].iloc[0]})",
    )


def within_superclass_error_figure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Share of fine-grained errors that stay in the true superclass, per size and model."""
    return size_lines_figure(
        table,
        "within_superclass_error_share",
        title=title or "Fine-grained errors that stay inside the true superclass",
        y_title="share of errors within superclass",
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
        labels={"x": SIZE_TITLE, "y": "class", "color": value.replace("_", " ")},
    )
    fig.update_layout(height=max(400, 28 * len(wide) + 150))
    return style(
        fig, f"Per-class {value.replace('_', ' ')} across sizes ({table['model'].iloc[0]})"
    )


def trend_counts_figure(counts: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars of :func:`~mrl_analysis.superclass.per_class.trend_counts`, MRL vs FF."""
    fig = px.bar(
        counts,
        x="trend",
        y="n_classes",
        color="model",
        barmode="group",
        category_orders={"trend": list(TRENDS)},
        labels={"n_classes": "number of classes", "trend": "per-class accuracy trend"},
    )
    return style(fig, title or "Per-class accuracy trends across representation sizes")


def relative_accuracy_figure(
    table: pd.DataFrame,
    sizes: Sequence[int] | None = None,
    highlight: Sequence[str] | None = None,
    n_outliers: int = 1,
    nbins: int = 20,
    width: int = 1200,
) -> go.Figure:
    """Histograms of per-class relative accuracy, one panel per size (Figure 12).

    ``sizes`` defaults to every size but the reference; panels wrap after four, each row
    300 px high. All panels share one grid of ``nbins`` bins (:func:`share_histogram_bins`).
    Classes in ``highlight`` (default: the
    :func:`~mrl_analysis.superclass.per_class.relative_accuracy_outliers`) are marked with
    an ``x`` and their name in every panel, names spread apart
    (:func:`spread_marker_labels`).
    """
    if table["model"].nunique() > 1:
        raise ValueError("relative_accuracy_figure draws one model: filter the table first")
    if sizes is None:
        others = table["truncate_dim"] != table["reference_size"]
        sizes = sorted(table.loc[others, "truncate_dim"].unique())
    sizes = [int(m) for m in sizes]
    if not sizes:  # a single-size model (e.g. only FF-512): nothing to compare with
        fig = go.Figure()
        fig.add_annotation(
            text="only the reference size: no smaller size to compare with",
            showarrow=False,
            xref="paper",
            yref="paper",
        )
        model = table["model"].iloc[0] if len(table) else "model"
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        return style(fig, f"Per-class accuracy relative to {model}: one size only")
    if highlight is None:
        highlight = relative_accuracy_outliers(table, n_outliers, sizes)["class_name"].tolist()
    cols = min(_PANEL_COLUMNS, len(sizes))
    rows = -(-len(sizes) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[f"d = {m}" for m in sizes],
    )
    for i, m in enumerate(sizes):
        row, col = divmod(i, cols)
        part = table[table["truncate_dim"] == m]
        fig.add_trace(
            go.Histogram(x=part["relative_accuracy"], marker_color="#8ab6d6", showlegend=False),
            row=row + 1,
            col=col + 1,
        )
        marked = part[part["class_name"].isin(highlight)]
        fig.add_trace(
            go.Scatter(
                x=marked["relative_accuracy"],
                y=np.zeros(len(marked)),
                mode="markers+text",
                marker={"symbol": "x", "size": 11, "color": "crimson"},
                text=marked["class_name"],
                textposition="top center",
                cliponaxis=False,
                showlegend=False,
            ),
            row=row + 1,
            col=col + 1,
        )
    # One x range for all panels, so the spread visibly shrinks as the size grows.
    fig.update_xaxes(matches="x")
    percent_axis(fig, "", axis="x")
    fig.update_xaxes(title_text="relative accuracy", row=rows)
    fig.update_yaxes(title_text="# classes", col=1)
    fig.update_layout(width=width, height=max(450, _PANEL_HEIGHT * rows))
    style(
        fig,
        f"Per-class accuracy relative to {table['model'].iloc[0]}-"
        f"{table['reference_size'].iloc[0]}",
    )
    return share_histogram_bins(spread_marker_labels(fig), nbins)


def spread_marker_labels(fig: go.Figure) -> go.Figure:
    """Set the names of labelled markers left of them in the left half (in x order) and
    right of them in the right half, so that names of nearby points (the outlier classes
    of a relative-accuracy panel) do not overlap. Changes ``fig`` in place, returns it."""
    for trace in fig.data:
        if trace.type != "scatter" or trace.text is None or "text" not in (trace.mode or ""):
            continue
        n = len(trace.x)
        rank = np.argsort(np.argsort(np.asarray(trace.x, dtype=float), kind="stable"))
        trace.textposition = [
            "top left" if 2 * r + 1 < n else "top right" if 2 * r + 1 > n else "top center"
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
