"""The explorer's static figures (plotly): what a headless run saves in place of the widgets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrl_analysis.explore.state import ExplorerView
from mrl_analysis.figures.style import percent_axis, size_axis, style


def confusion_figure(counts: np.ndarray, names: Sequence[str], title: str = "") -> go.Figure:
    """A row-normalized confusion matrix as a heat map (rows true, columns predicted)."""
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(names),
            y=list(names),
            customdata=counts,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} (%{z:.1%})<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="predicted class")
    return style(fig, title)


def overview_figure(
    accuracy: pd.DataFrame, view: ExplorerView, sizes: Sequence[int], kind: str
) -> go.Figure:
    """Accuracy per size (``accuracy``: ``ExplorerState.accuracy_table()``) beside ``view``'s
    confusion matrix; a dotted line marks ``view``'s size."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        subplot_titles=(
            "accuracy per size",
            f"{view.level} confusion at m={view.size} (row-normalized)",
        ),
    )
    for metric, frame in accuracy.groupby("metric", sort=False):
        fig.add_trace(
            go.Scatter(
                x=frame["truncate_dim"], y=frame["value"], mode="lines+markers", name=metric
            ),
            row=1,
            col=1,
        )
    fig.add_vline(x=view.size, line_dash="dot", line_color="gray", row=1, col=1)
    heat = confusion_figure(view.confusion, view.confusion_labels).data[0]
    heat.showscale = False
    fig.add_trace(heat, row=1, col=2)
    size_axis(fig, sizes, row=1, col=1)
    percent_axis(fig, "accuracy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    style(fig, f"{kind} explorer at m={view.size}: accuracy {view.accuracy:.2%}")
    fig.update_layout(width=1100, height=480, legend={"orientation": "h", "y": -0.2})
    return fig


def sample_figure(view: ExplorerView, panels: Sequence[tuple[str, np.ndarray]]) -> go.Figure:
    """``view``'s sample: ``panels`` (titled ``uint8`` RGB images: the image, its CAM, its
    neighbours; ``ExplorerState.sample_panels``) and its top-5 classes."""
    cols = max(1, len(panels)) + 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        column_widths=[1] * (cols - 1) + [2],
        subplot_titles=[t for t, _ in panels] + [f"top-5 at m={view.size}"],
        horizontal_spacing=0.01,
    )
    for j, (_, rgb) in enumerate(panels):
        fig.add_trace(go.Image(z=np.asarray(rgb, np.uint8), hoverinfo="skip"), row=1, col=j + 1)
        fig.update_xaxes(visible=False, row=1, col=j + 1)
        fig.update_yaxes(visible=False, row=1, col=j + 1)
    top = view.top
    fig.add_trace(
        go.Bar(
            x=top["probability"],
            y=top["name"],
            text=[f"{n} {p:.0%}" for n, p in zip(top["name"], top["probability"], strict=True)],
            textposition="outside",
            cliponaxis=False,
            orientation="h",
            marker_color=np.where(top["is_label"], "#1a7f37", "#8c959f").tolist(),
            showlegend=False,
        ),
        row=1,
        col=cols,
    )
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=cols)
    percent_axis(fig, "probability", axis="x", row=1, col=cols)
    fig.update_xaxes(range=[0, 1], row=1, col=cols)
    style(fig, f"sample {view.sample} at m={view.size}: prediction {top['name'].iloc[0]}")
    for annotation in fig.layout.annotations:
        annotation.font = {"size": 10}
    fig.update_layout(width=max(700, 120 * cols + 200), height=280, margin={"t": 80})
    return fig
