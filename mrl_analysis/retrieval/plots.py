"""Retrieval figures (paper Figures 7-8, Tables 30-31; the AdANNS frontier): the theme's
only plotly module.

Each figure draws the tidy table of :mod:`mrl_analysis.retrieval.tables` (values are
fractions, shown as percent, with their bootstrap intervals as error bars); ``dataset``
prefixes the title.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from mrl_analysis.figures.style import TEMPLATE, percent_axis, size_axis, style
from mrl_analysis.retrieval.metrics import metric_label
from mrl_analysis.retrieval.summary import (
    as_accurate_speedup,
    frontier_points,
    pareto_front,
    ratio_text,
)
from mrl_analysis.retrieval.tables import select

__all__ = [
    "cost_tradeoff_figure",
    "frontier_figure",
    "metric_vs_size_figure",
    "shortlist_ablation_figure",
]

#: Labelled ticks on a cost axis: more crowd a half-width panel.
_MAX_LOG_TICKS = 5
#: Tick labels on a log axis closer than this (in decades) collide at notebook widths
#: (1600 and 2048 are 0.107 apart: they fit once the legend is below the plot).
_MIN_TICK_DECADES = 0.08
#: Legend below the plot: long configuration names would otherwise squeeze the plot area.
_LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0, "xanchor": "left"}


def _title(text: str, dataset: str | None) -> str:
    return f"{dataset} · {text}" if dataset else text


def _error_bars(frame: pd.DataFrame, value: str = "value", low: str = "ci_low") -> dict:
    """``error_y`` of a trace from its interval columns (none when the table has none)."""
    high = "ci_high" if low == "ci_low" else low.replace("_low", "_high")
    if low not in frame or frame[low].isna().all():
        return {"visible": False}
    return {
        "type": "data",
        "symmetric": False,
        "array": (frame[high] - frame[value]).to_numpy(),
        "arrayminus": (frame[value] - frame[low]).to_numpy(),
        "thickness": 1,
        "width": 3,
    }


def _log_ticks(values: pd.Series) -> list[float]:
    """Ticks spanning ``values`` on a log axis at 1-2-5 steps, or 1-5 or decades when those
    would crowd the axis (plotly's own label the 2s and 5s as bare digits)."""
    lo, hi = float(values.min()), float(values.max())
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for steps in ((1, 2, 5), (1, 5), (1,)):
        ticks = [m * 10.0**e for e in decades for m in steps]
        inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
        if len(inside) <= _MAX_LOG_TICKS:
            break
    return inside


def _spaced_ticks(values: Sequence[int]) -> list[int]:
    """The values to label on a log axis, the largest first kept and every label at least
    :data:`_MIN_TICK_DECADES` from the next (a close neighbour is left unlabelled, not
    overlapped)."""
    kept: list[int] = []
    for v in sorted({int(x) for x in values}, reverse=True):
        if not kept or math.log10(kept[-1] / v) >= _MIN_TICK_DECADES:
            kept.append(v)
    return kept[::-1]


def metric_vs_size_figure(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    families: Mapping[str, str] | None = None,
    dataset: str | None = None,
) -> go.Figure:
    """Single-shot ``metric@k`` against representation size, one line per model (paper
    Figure 7). ``families`` maps models to lines: FF-k models mapped to ``"FF"`` form one."""
    sel = select(table, metric, k)
    sel = sel[sel["method"] == "single-shot"].sort_values("Ds")
    if families:
        sel = sel.assign(model=sel["model"].map(lambda m: families.get(m, m)))
    fig = go.Figure()
    for (model, index), group in sel.groupby(["model", "index"], sort=False):
        name = model if sel["index"].nunique() == 1 else f"{model} ({index})"
        fig.add_trace(
            go.Scatter(
                x=group["Ds"].astype(int),
                y=group["value"],
                mode="lines+markers",
                name=name,
                error_y=_error_bars(group),
                hovertemplate="d=%{x}<br>%{y:.2%}",
            )
        )
    label = metric_label(metric, k)
    style(fig, _title(f"Single-shot retrieval: {label} vs representation size", dataset))
    size_axis(fig, sel["Ds"].astype(int))
    return percent_axis(fig, label)


def cost_tradeoff_figure(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    model: str | None = None,
    reference_dim: int | None = None,
    tolerance: float = 0.0,
    dataset: str | None = None,
) -> go.Figure:
    """``metric@k`` against MFLOPs/query for every adaptive ``(Ds, Dr)`` and funnel, over the
    single-shot Pareto line (paper Figure 8), annotated with
    :func:`~mrl_analysis.retrieval.summary.as_accurate_speedup` (``tolerance`` a fraction).
    Frontier rows (other index kinds, faiss peers) belong to :func:`frontier_figure`."""
    sel = select(table, metric, k)
    sel = sel[sel["method"].isin(["single-shot", "adaptive", "funnel"])]
    models = sel["model"].unique()
    if model is None:
        if len(models) != 1:
            raise ValueError(f"the table holds several models {list(models)}: pass model=")
        model = models[0]
    sel = sel[sel["model"] == model]
    if sel.empty:
        raise ValueError(f"no rows for model {model!r}; models: {list(models)}")
    if sel["index"].nunique() != 1:
        raise ValueError("the table mixes index kinds: filter it to one index first")
    fig = go.Figure()
    single = sel[sel["method"] == "single-shot"].sort_values("mflops_per_query")
    front = single[single["value"] >= single["value"].cummax()]
    fig.add_trace(
        go.Scatter(
            x=front["mflops_per_query"],
            y=front["value"],
            mode="lines+markers+text",
            text=[f"d={int(d)}" for d in front["Ds"]],
            textposition="bottom center",
            name="single-shot (Pareto)",
            line={"color": "darkorange"},
            error_y=_error_bars(front),
        )
    )
    adaptive = sel[sel["method"] == "adaptive"]
    for ds, group in adaptive.groupby("Ds", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["mflops_per_query"],
                y=group["value"],
                mode="markers",
                name=f"AR Ds={int(ds)}",
                error_y=_error_bars(group),
                customdata=group["Dr"].astype(int),
                hovertemplate="Ds=" + str(int(ds)) + ", Dr=%{customdata}<br>%{x:.3g} MFLOPs"
                "<br>%{y:.2%}<extra></extra>",
            )
        )
    funnel = sel[sel["method"] == "funnel"]
    if len(funnel):
        fig.add_trace(
            go.Scatter(
                x=funnel["mflops_per_query"],
                y=funnel["value"],
                mode="markers",
                marker={"symbol": "star", "size": 11, "color": "purple"},
                name="funnel",
                text=funnel["cascade"],
                hovertemplate="%{text}<br>%{x:.3g} MFLOPs<br>%{y:.2%}<extra></extra>",
            )
        )
    best = as_accurate_speedup(sel, metric, k, reference_dim=reference_dim, tolerance=tolerance)
    if len(best):
        b = best.iloc[0]
        as_good = "as accurate as" if tolerance <= 0 else f"within {100 * tolerance:.3g} points of"
        fig.add_annotation(
            x=math.log10(b["mflops_per_query"]),
            y=b["value"],
            text=(
                f"{as_good} d={b['reference_Ds']}: "
                f"{ratio_text(b['flops_ratio'], 'fewer', 'more')} MFLOPs, "
                f"{ratio_text(b['speed_ratio'], 'faster', 'slower')} measured"
            ),
            showarrow=True,
            arrowhead=2,
            # Down and right of the point, into the empty area under the accurate configs,
            # boxed so that the point labels it crosses stay readable.
            ax=110,
            ay=110,
            bgcolor="rgba(255, 255, 255, 0.9)",
            bordercolor="#888",
        )
    elif len(single):
        ref = int(single["Ds"].max()) if reference_dim is None else int(reference_dim)
        fig.add_annotation(
            xref="paper",
            yref="paper",
            x=0.02,
            y=0.98,
            showarrow=False,
            text=f"no adaptive or funnel configuration reaches single-shot d={ref}",
        )
    label = metric_label(metric, k)
    index = sel["index"].iloc[0]
    style(fig, _title(f"{model}: {label} vs MFLOPs per query ({index} shortlisting)", dataset))
    fig.update_layout(legend=_LEGEND_BELOW, height=600)
    mflops = sel["mflops_per_query"]
    ticks = _log_ticks(mflops)
    fig.update_xaxes(
        type="log",
        title_text="MFLOPs / query (exact search)",
        tickvals=ticks,
        ticktext=[f"{t:g}" for t in ticks],
        # The data's span: autorange would also make room for the annotation's text box.
        range=[math.log10(mflops.min()) - 0.1, math.log10(mflops.max()) + 0.1],
    )
    return percent_axis(fig, label, decimals=1)


def shortlist_ablation_figure(
    table: pd.DataFrame,
    metrics: Sequence[tuple[str, int]] = (("top1", 1), ("map", 10)),
    *,
    dataset: str | None = None,
) -> go.Figure:
    """Shortlist-ablation rows: each ``(metric, k)`` against shortlist length ``K``, with
    single-shot at the rerank size ``Dr`` as a dashed reference when the table has it."""
    fig = go.Figure()
    lengths: set[int] = set()
    colors = itertools.cycle(pio.templates[TEMPLATE].layout.colorway)
    for metric, k in metrics:
        sel = select(table, metric, k)
        single = sel[sel["method"] == "single-shot"]
        sel = sel[sel["method"] == "shortlist-ablation"].sort_values("K")
        lengths.update(int(v) for v in sel["K"])
        for (model, ds, dr), group in sel.groupby(["model", "Ds", "Dr"], sort=False):
            color = next(colors)
            label = metric_label(metric, k)
            fig.add_trace(
                go.Scatter(
                    x=group["K"].astype(int),
                    y=group["value"],
                    mode="lines+markers",
                    name=f"{model} {label} (Ds={ds}, Dr={dr})",
                    line={"color": color},
                    error_y=_error_bars(group),
                )
            )
            ref = single[(single["model"] == model) & (single["Ds"] == dr)]
            if len(ref):
                fig.add_trace(
                    go.Scatter(
                        x=[group["K"].min(), group["K"].max()],
                        y=[ref["value"].iloc[0]] * 2,
                        mode="lines",
                        name=f"{model} {label} single-shot d={dr}",
                        line={"color": color, "dash": "dash"},
                    )
                )
    style(fig, _title("Shortlist length ablation (adaptive retrieval)", dataset))
    # Ticks at the measured lengths (a plain log axis over 100..2048 labels 2, 3, ... 9),
    # level, thinned where neighbours would overlap; the legend goes below so that long
    # curve names do not squeeze the axis (1600 and 2048 collided beside a side legend).
    size_axis(fig, sorted(lengths), title="Shortlist length K")
    ticks = _spaced_ticks(lengths)
    fig.update_xaxes(tickvals=ticks, ticktext=[str(v) for v in ticks], tickangle=0)
    fig.update_layout(legend=_LEGEND_BELOW, height=560)
    return percent_axis(fig, " / ".join(metric_label(m, k) for m, k in metrics), decimals=1)


_QUALITIES = ("nn_recall", "top1", "map")


def frontier_figure(
    table: pd.DataFrame,
    model: str | None = None,
    *,
    quality: str = "nn_recall",
    k: int = 10,
    dataset: str | None = None,
) -> go.Figure:
    """The frontier (AdANNS view): ``quality`` (``"nn_recall"``: k-NN recall@``k`` against
    exact full-size neighbours, ``"top1"`` or ``"map"``: mAP@``k``) against measured
    ms/query (left) and against bytes per database vector (right), one point per
    configuration of :func:`~mrl_analysis.retrieval.summary.frontier_points`, coloured by
    family, with bootstrap error bars; the Pareto points of each panel are ringed and
    joined (no other configuration is both cheaper and better). The exact single-shot
    reference is a star.
    """
    if quality not in _QUALITIES:
        raise ValueError(f"unknown quality {quality!r}: use one of {_QUALITIES}")
    points = frontier_points(table, model, k=k)
    model = points["model"].iloc[0]
    col = quality
    points = points.dropna(subset=[col])
    if points.empty:
        raise ValueError(f"model {model!r} has no {quality} values: run the frontier first")
    label = metric_label(quality, 1 if quality == "top1" else k)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("against measured time", "against memory"),
    )
    colors = itertools.cycle(pio.templates[TEMPLATE].layout.colorway)
    panels = (
        (1, "ms_per_query", "ms / query (log)"),
        (2, "bytes_per_vector", "bytes / vector (log)"),
    )
    # Marker shapes tell MRL pipelines, faiss peers and plain searches apart even where the
    # colour cycle repeats; the exact reference is drawn last, on top.
    order = sorted(points["family"].unique(), key=lambda f: f == "exact single-shot")
    for family in order:
        group = points[points["family"] == family]
        color = next(colors)
        exact = family == "exact single-shot"
        symbol = "star" if exact else "diamond" if family.startswith("faiss") else "circle"
        symbol = "square" if family == "single-shot (prefix)" else symbol
        for panel, cost, _ in panels:
            fig.add_trace(
                go.Scatter(
                    x=group[cost],
                    y=group[col],
                    mode="markers",
                    name=family,
                    legendgroup=family,
                    showlegend=panel == 1,
                    marker={
                        "color": "black" if exact else color,
                        "symbol": symbol,
                        "size": 14 if exact else 8,
                        "opacity": 0.85,
                    },
                    error_y=_error_bars(group, col, f"{col}_low"),
                    text=group["label"],
                    hovertemplate="%{text}<br>%{x:.4g}<br>%{y:.2%}<extra></extra>",
                ),
                row=1,
                col=panel,
            )
    for panel, cost, title in panels:
        front = points[pareto_front(points[cost].to_numpy(), points[col].to_numpy())]
        front = front.sort_values(cost)
        fig.add_trace(
            go.Scatter(
                x=front[cost],
                y=front[col],
                mode="lines+markers",
                name="Pareto front",
                legendgroup="pareto",
                showlegend=panel == 1,
                line={"color": "black", "width": 1, "dash": "dot"},
                marker={"symbol": "circle-open", "size": 15, "color": "black"},
                text=front["label"],
                hovertemplate="Pareto: %{text}<br>%{x:.4g}<br>%{y:.2%}<extra></extra>",
            ),
            row=1,
            col=panel,
        )
        ticks = _log_ticks(points[cost])
        fig.update_xaxes(
            type="log",
            title_text=title,
            tickvals=ticks,
            ticktext=[f"{t:g}" for t in ticks],
            tickangle=0,
            row=1,
            col=panel,
        )
    style(fig, _title(f"{model}: {label} vs cost, every configuration (frontier)", dataset))
    fig.update_layout(legend=_LEGEND_BELOW, height=620)
    return percent_axis(fig, label, decimals=1, row=1, col=1)
