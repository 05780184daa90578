"""Retrieval figures (paper Figures 7-8, Tables 30-31): the theme's only plotly module.

Each figure draws the tidy table of :mod:`mrl_analysis.retrieval.tables` (values are
fractions, shown as percent); ``dataset`` prefixes the title.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from mrl_analysis.figures.style import TEMPLATE, percent_axis, size_axis, style
from mrl_analysis.retrieval.metrics import metric_label
from mrl_analysis.retrieval.summary import as_accurate_speedup
from mrl_analysis.retrieval.tables import select

__all__ = ["cost_tradeoff_figure", "metric_vs_size_figure", "shortlist_ablation_figure"]


def _title(text: str, dataset: str | None) -> str:
    return f"{dataset} · {text}" if dataset else text


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
    :func:`~mrl_analysis.retrieval.summary.as_accurate_speedup` (``tolerance`` a fraction)."""
    sel = select(table, metric, k)
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
                f"{as_good} d={b['reference_Ds']} at {b['flops_ratio']:.0f}× fewer "
                f"MFLOPs, {b['speed_ratio']:.1f}× faster"
            ),
            showarrow=True,
            arrowhead=2,
            ax=60,
            ay=40,
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
    fig.update_xaxes(type="log", title_text="MFLOPs / query (exact search)")
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
    # Ticks at the measured lengths: a plain log axis over 100..2048 labels 2, 3, ... 9.
    size_axis(fig, sorted(lengths), title="Shortlist length K")
    return percent_axis(fig, "value")
