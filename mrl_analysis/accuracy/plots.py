"""Figures of the per-size accuracy tables (paper Figures 2, 3 and 5).

The tables hold fractions; the y axis shows them as percent (:func:`percent_axis`) and the
x axis is the workbench's log-2 size axis (:func:`size_axis`).
"""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from mrl_analysis.accuracy.metrics import method_label
from mrl_analysis.figures.style import percent_axis, size_axis, style

_LABEL_ORDER = [
    "MRL",
    "MRL (interpolated)",
    "MRL-E",
    "MRL-E (interpolated)",
    "FF",
    "FF Rand. FS",
    "FF SVD",
    "FF JL",
]
_COLORS = {
    "MRL": "#1f77b4",
    "MRL-E": "#ff7f0e",
    "FF": "#2ca02c",
    "SVD": "#d62728",
    "JL": "#9467bd",
    "Rand. FS": "#8c564b",
}


def metric_title(metric: str) -> str:
    """``"top1"`` -> ``"Top-1 accuracy"``, ``"1-NN"`` -> ``"1-NN accuracy"`` (an axis title)."""
    top = re.fullmatch(r"top(\d+)", metric)
    if top:
        return f"Top-{top.group(1)} accuracy"
    return f"{metric} accuracy"


def _line_style(label: str, index: int) -> dict:
    dash = "solid"
    color = None
    for key in ("Rand. FS", "SVD", "JL"):
        if label.endswith(key):
            color, dash = _COLORS[key], "dot"
    if color is None:
        base = label.removesuffix(" (interpolated)")
        color = _COLORS.get(base)
        if base != label:
            dash = "dash"
    if color is None:
        color = qualitative.Plotly[index % len(qualitative.Plotly)]
    return {"color": color, "dash": dash}


def accuracy_figure(
    table: pd.DataFrame, metric: str = "top1", title: str | None = None
) -> go.Figure:
    """Accuracy vs representation size on a log-2 x axis, one line per legend label, with
    the bootstrap interval of every point as error bars (when the table has ``ci_low`` /
    ``ci_high``).

    ``table`` is any concatenation of :mod:`mrl_analysis.accuracy.metrics`' tables; rows
    with the same ``label`` (e.g. every FF-k model, each at its own size) form one line,
    as in the paper's Figures 2, 3 and 5.
    """
    missing = {"truncate_dim", "metric", "value"} - set(table.columns)
    if missing:
        raise ValueError(
            f"table lacks columns {sorted(missing)}; pass a table from linear_accuracy, "
            "knn_accuracy, mrl_e_interpolated_accuracy or baseline_knn_accuracy"
        )
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(
            f"no rows with metric {metric!r}; the table has {sorted(table['metric'].unique())}"
        )
    labels = (
        rows["label"]
        if "label" in rows.columns
        else pd.Series(
            [method_label(mo, me) for mo, me in zip(rows["model"], rows["method"], strict=True)],
            index=rows.index,
        )
    )
    present = list(dict.fromkeys(labels))
    order = [name for name in _LABEL_ORDER if name in present]
    order += [name for name in present if name not in order]
    fig = go.Figure()
    for i, name in enumerate(order):
        line = rows[labels == name].sort_values("truncate_dim")
        dense = name.endswith("(interpolated)")
        fig.add_trace(
            go.Scatter(
                x=line["truncate_dim"],
                y=line["value"],
                mode="lines+markers",
                name=name,
                line=_line_style(name, i),
                # Interpolated grids can be dense: small markers keep the line readable.
                marker={"size": 4 if dense else 7},
                error_y=_error_bars(line, thin=dense),
                hovertemplate=f"{name}<br>%{{x}} dims: %{{y:.2%}}<extra></extra>",
            )
        )
    size_axis(fig, rows["truncate_dim"].unique())
    percent_axis(fig, metric_title(metric))
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    default = f"{metric_title(metric).removesuffix(' accuracy')} Accuracy vs Representation Size"
    return style(fig, title or default)


def _error_bars(line: pd.DataFrame, *, thin: bool) -> dict | None:
    """The bootstrap interval of each point as asymmetric error bars (None without one)."""
    if not {"ci_low", "ci_high"} <= set(line.columns):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": (line["ci_high"] - line["value"]).to_numpy(),
        "arrayminus": (line["value"] - line["ci_low"]).to_numpy(),
        "thickness": 1 if thin else 1.5,
        "width": 0 if thin else 3,
    }
