"""Figures of the interpretability theme: CAM grids and summaries, disagreement counts.

Every figure uses the workbench template; shares (fractions) are shown as percent and
size axes are the library's log-2 size axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mrl_analysis.figures.style import SIZE_TITLE, percent_axis, size_axis, style
from mrl_analysis.interpret.cams import SizeCams
from mrl_analysis.interpret.disagreement import DIRECTIONS
from mrl_analysis.interpret.images import overlay_cam

#: :func:`~mrl_analysis.interpret.cam_metrics.cam_metric_summary` metrics that are shares.
SHARE_METRICS = ("energy_in_box", "box_area_fraction", "pointing_hit")
#: The width a notebook output area typically offers (px): the CAM grid's height is planned
#: for it, its width follows the page.
_PAGE_WIDTH = 900


#: Panel titles of the CAM metrics.
_METRIC_TITLES = {
    "spearman": "Spearman correlation with the largest size",
    "energy_in_box": "CAM energy inside the box",
    "box_area_fraction": "Box area (chance level)",
    "pointing_hit": "Peak inside the box",
}


def cam_summary_figure(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """Mean per size of a :func:`~mrl_analysis.interpret.cam_metrics.cam_metric_summary`
    table with its bootstrap interval over the images as error bars, one panel per metric
    (shares as percent)."""
    needed = {"truncate_dim", "metric", "mean", "ci_low", "ci_high"}
    if not needed <= set(summary.columns):
        raise ValueError(
            f"not a cam_metric_summary table: it lacks {sorted(needed - set(summary))}"
        )
    color = "model" if "model" in summary.columns else None
    metrics = list(dict.fromkeys(summary["metric"]))
    data = summary.assign(
        _above=summary["ci_high"] - summary["mean"], _below=summary["mean"] - summary["ci_low"]
    )
    fig = px.line(
        data,
        x="truncate_dim",
        y="mean",
        error_y="_above",
        error_y_minus="_below",
        color=color,
        facet_col="metric",
        facet_col_spacing=0.07,  # room for each panel's own y tick labels
        category_orders={"metric": metrics},
        markers=True,
        labels={"mean": "Mean over images", "model": ""},
        hover_data={"_above": False, "_below": False},
    )
    fig.for_each_annotation(
        lambda a: a.update(text=_METRIC_TITLES.get(a.text.split("=")[-1], a.text))
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    # Narrow side-by-side panels: every other size as a tick, one axis title in the middle,
    # so labels neither rotate nor run into the next panel's title.
    sizes = sorted(int(m) for m in summary["truncate_dim"].unique())
    size_axis(fig, sizes[::-2][::-1] if len(metrics) > 1 and len(sizes) > 5 else sizes)
    fig.update_xaxes(title_text="", tickangle=0)
    fig.update_xaxes(title_text=SIZE_TITLE, col=(len(metrics) + 1) // 2)
    for col, metric in enumerate(metrics, start=1):
        if metric in SHARE_METRICS:
            percent_axis(fig, "Mean over images" if col == 1 else "", row=1, col=col)
    return style(fig, title)


def _upscale(rgb: np.ndarray, min_pixels: int) -> np.ndarray:
    factor = max(1, math.ceil(min_pixels / max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def cam_grid_figure(
    images: torch.Tensor | np.ndarray,
    result: SizeCams,
    class_names: Sequence[str] | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    panel_pixels: int = 140,
    title: str | None = None,
) -> go.Figure:
    """Figure 9 layout: rows = images, columns = sizes, CAM over the image.

    Each panel is titled with the size and the prediction there, green with ✓ when it is
    right and red with ✗ when wrong (black without labels). ``images [n, C, H, W]`` are
    the tensors the CAMs were computed on. The width follows the page (no fixed width, so
    JupyterLab never clips it); the height gives each row a panel of at most
    ``panel_pixels`` px, as wide as the columns of a typical notebook page allow.
    """
    n, s = result.cams.shape[:2]
    if len(images) != n:
        raise ValueError(f"{len(images)} images for CAMs of {n} images")
    table = result.table.sort_values(["image", "truncate_dim"], kind="stable")
    order = {m: j for j, m in enumerate(result.sizes)}
    cells = table.assign(col=table["truncate_dim"].map(order)).sort_values(["image", "col"])
    names = class_names or [str(c) for c in range(int(cells["predicted"].max()) + 1)]

    titles, colors = [], []
    for row in cells.itertuples():
        known = row.label >= 0
        mark = (" ✓" if row.correct else " ✗") if known else ""
        titles.append(f"m={row.truncate_dim}: {_short(names[row.predicted])}{mark}")
        colors.append(("#1a7f37" if row.correct else "#cf222e") if known else "#24292f")
    fig = make_subplots(
        rows=n,
        cols=s,
        subplot_titles=titles,
        horizontal_spacing=0.01,
        vertical_spacing=min(0.06, 0.3 / max(n - 1, 1)),
    )
    for i in range(n):
        for j in range(s):
            rgb = _upscale(overlay_cam(images[i], result.cams[i, j]), 112)
            fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=i + 1, col=j + 1)
    for annotation, color in zip(fig.layout.annotations, colors, strict=True):
        annotation.font = {"size": 11, "color": color}
    fig.update_xaxes(visible=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    if row_labels is not None:
        for i, label in enumerate(row_labels):
            fig.update_yaxes(title_text=label, title_font={"size": 10}, row=i + 1, col=1)
    left = 110 if row_labels is not None else 10
    panel = min(panel_pixels, (_PAGE_WIDTH - left - 10) / s)
    fig.update_layout(
        autosize=True,
        height=round((panel + 22) * n + 90),  # 22 px per row for the panel titles
        margin={"l": left, "r": 10, "t": 70, "b": 10},
    )
    return style(fig, title or f"{result.method} per Size (Layer {result.target_layer})")


def disagreement_summary_figure(summary: pd.DataFrame) -> go.Figure:
    """Bars of :func:`disagreement_summary`: cases per direction, split by confusion."""
    lo, hi = int(summary["small_dim"].iloc[0]), int(summary["large_dim"].iloc[0])
    fig = px.bar(
        summary,
        x="direction",
        y="n",
        color="confusion",
        text="n",
        category_orders={"direction": list(DIRECTIONS)},
        labels={"n": "Samples", "direction": "", "confusion": "Wrong answer"},
    )
    fig.update_xaxes(
        tickvals=list(DIRECTIONS),
        ticktext=[f"wrong at {lo}, right at {hi}", f"right at {lo}, wrong at {hi}"],
    )
    return style(fig, f"Disagreements Between Sizes {lo} and {hi}")


def pairwise_disagreement_figure(table: pd.DataFrame) -> go.Figure:
    """Heat maps of :func:`pairwise_disagreement`: fixed (left) and broken (right) shares."""
    long = table.melt(
        id_vars=["small_dim", "large_dim", "n_samples"],
        value_vars=["n_fixed", "n_broken"],
        var_name="kind",
    )
    long["share"] = long["value"] / long["n_samples"]
    long["kind"] = long["kind"].map(
        {"n_fixed": "wrong at small, right at large", "n_broken": "right at small, wrong at large"}
    )
    sizes = sorted(set(table["small_dim"]) | set(table["large_dim"]))
    fig = px.density_heatmap(
        long,
        x="large_dim",
        y="small_dim",
        z="share",
        facet_col="kind",
        histfunc="sum",
        color_continuous_scale="Viridis",
        category_orders={"large_dim": sizes, "small_dim": sizes},
        labels={
            "large_dim": "Larger size (dims)",
            "small_dim": "Smaller size (dims)",
            "share": "Share",
        },
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    fig.update_coloraxes(colorbar_tickformat=".0%", colorbar_title_text="Share")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1].capitalize()))
    return style(fig, "Samples on Which Two Sizes Disagree (Share of the Eval Set)")
