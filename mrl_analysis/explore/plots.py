"""The explorer's figures (plotly): its confusion heat map, and the static snapshot a
headless run saves in place of the widgets."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from mrl_analysis.core.kinds import model_display_name
from mrl_analysis.explore.state import ExplorerView
from mrl_analysis.figures.style import percent_axis, size_axis, style

#: Readable names of :meth:`ExplorerState.accuracy_table`'s metrics.
METRIC_NAMES = {"accuracy": "Top-1 accuracy", "superclass_accuracy": "Superclass accuracy"}
#: Above this many classes the heat map's axes stop naming every class (hover still does).
MAX_NAMED_CLASSES = 40
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def _shares(counts: np.ndarray) -> np.ndarray:
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)


def confusion_heatmap(counts: np.ndarray, names: Sequence[str]) -> go.Heatmap:
    """A row-normalized confusion matrix (rows true, columns predicted) as a heat-map trace;
    shares rounded to 3 decimals (what the hover shows), counts in the hover."""
    names = list(names)
    return go.Heatmap(
        z=np.round(_shares(counts), 3),
        x=names,
        y=names,
        customdata=counts,
        colorscale="Blues",
        zmin=0,
        zmax=1,
        colorbar={"title": {"text": "share"}, "tickformat": ".0%", "thickness": 12},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} (%{z:.1%})<extra></extra>",
    )


def _confusion_axes(fig: go.Figure, k: int, **selector: int) -> None:
    named = k <= MAX_NAMED_CLASSES
    fig.update_xaxes(title_text="predicted", showticklabels=named, tickangle=-45, **selector)
    fig.update_yaxes(
        title_text="true", showticklabels=named, autorange="reversed", ticksuffix=" ", **selector
    )


def confusion_figure(
    counts: np.ndarray,
    names: Sequence[str],
    title: str = "",
    *,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """A row-normalized confusion matrix as a heat map: class names on both axes, "true"
    (rows) and "predicted" (columns) axis titles; ``width`` / ``height`` in pixels fix its
    size (None: responsive)."""
    fig = go.Figure(confusion_heatmap(counts, names))
    _confusion_axes(fig, len(names))
    style(fig, title)
    fig.update_layout(
        width=width,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        title={"font": {"size": 13}},
    )
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


class ConfusionBundles:
    """Display bundles of one class list's confusion heat map (:func:`confusion_figure`)
    for JupyterLab's plotly renderer, one per matrix.

    The figure's JSON is built once; each :meth:`bundle` only puts new numbers and a new
    title into a copy of it. Building a plotly figure object costs tens of milliseconds
    (validation, template copies), which a slider move should not pay.
    """

    def __init__(self, names: Sequence[str], *, width: int, height: int) -> None:
        k = len(names)
        fig = confusion_figure(np.zeros((k, k), np.int64), names, "-", width=width, height=height)
        self._spec = json.loads(pio.to_json(fig, validate=False))
        self._spec["config"] = {"displayModeBar": False, "responsive": False}
        self.k = k

    def bundle(self, counts: np.ndarray, title: str) -> dict:
        """The bundle of the ``[K, K]`` matrix ``counts`` (rows true), titled ``title``."""
        counts = np.asarray(counts)
        if counts.shape != (self.k, self.k):
            raise ValueError(f"counts must be [{self.k}, {self.k}], got {counts.shape}")
        spec, trace, layout = self._spec, self._spec["data"][0], self._spec["layout"]
        numbers = {"z": np.round(_shares(counts), 3).tolist(), "customdata": counts.tolist()}
        figure = {
            **spec,
            "data": [{**trace, **numbers}],
            "layout": {**layout, "title": {**layout["title"], "text": title}},
        }
        return {PLOTLY_MIMETYPE: figure, "text/plain": f"<plotly heat map: {title}>"}


def overview_figure(
    accuracy: pd.DataFrame, view: ExplorerView, sizes: Sequence[int], kind: str
) -> go.Figure:
    """Accuracy per size (``accuracy``: ``ExplorerState.accuracy_table()``) beside ``view``'s
    confusion matrix; a dotted line marks ``view``'s size."""
    level = "Superclass" if view.level == "superclass" else "Class"
    names = view.confusion_labels
    # Subplots do not push each other aside: leave room for the heat map's class names
    # and its "true" title between the two plots.
    longest = max(map(len, names)) if len(names) <= MAX_NAMED_CLASSES else 0
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        horizontal_spacing=min(0.3, 0.08 + 0.011 * longest),
        subplot_titles=(
            "Accuracy per size",
            f"{level} confusion at m = {view.size} (share of each true class)",
        ),
    )
    for metric, frame in accuracy.groupby("metric", sort=False):
        fig.add_trace(
            go.Scatter(
                x=frame["truncate_dim"],
                y=frame["value"],
                mode="lines+markers",
                name=METRIC_NAMES.get(str(metric), str(metric)),
            ),
            row=1,
            col=1,
        )
    fig.add_vline(x=view.size, line_dash="dot", line_color="gray", row=1, col=1)
    heat = confusion_heatmap(view.confusion, names)
    heat.colorbar.update(x=1.0, len=0.9)
    fig.add_trace(heat, row=1, col=2)
    _confusion_axes(fig, len(names), row=1, col=2)
    size_axis(fig, sizes, row=1, col=1)
    percent_axis(fig, "Accuracy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    title = f"{model_display_name(kind)} explorer at m = {view.size}"
    style(fig, f"{title}: top-1 accuracy {view.accuracy:.1%}")
    fig.update_layout(width=1100, height=520, legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def sample_figure(view: ExplorerView, panels: Sequence[tuple[str, np.ndarray]]) -> go.Figure:
    """``view``'s sample: ``panels`` (titled ``uint8`` RGB images: the image, its CAM, its
    neighbours; ``ExplorerState.sample_panels``) and its top-5 classes."""
    cols = max(1, len(panels)) + 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        column_widths=[1] * (cols - 1) + [2],
        subplot_titles=[t for t, _ in panels] + [f"Top-5 classes at m = {view.size}"],
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
            text=[f"{n} {p:.1%}" for n, p in zip(top["name"], top["probability"], strict=True)],
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
    percent_axis(fig, "Probability", axis="x", row=1, col=cols)
    fig.update_xaxes(range=[0, 1], row=1, col=cols)
    style(fig, f"Sample {view.sample} at m = {view.size}: prediction {top['name'].iloc[0]}")
    for annotation in fig.layout.annotations:
        annotation.font = {"size": 10}
    # A PNG snapshot: a fixed width, at most what a notebook column shows without scaling.
    fig.update_layout(width=min(1100, 100 * cols + 200), height=300, margin={"t": 90})
    return fig
