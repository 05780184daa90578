"""Figures of the Matryoshka diagnostic (the only module of the theme importing plotly).

Every figure draws one of the theme's tidy tables (fractions, shown as percent) against the
representation size on a log-2 axis with plain ticks; one panel per model, at most two
panels a row, so a figure reads at any width.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from mrl_analysis.core.checks import check_table
from mrl_analysis.diagnostic.prefixes import VARIANT_LABELS
from mrl_analysis.figures.style import percent_axis, size_axis, style

_COLORS = {
    "prefix": qualitative.Plotly[0],
    "pca": qualitative.Plotly[1],
    "random": qualitative.Plotly[2],
    "norm-first": qualitative.Plotly[4],
    "full": "rgb(90, 90, 90)",
}
_ROW_HEIGHT = 330


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("rgb("):
        return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    h = color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _grid(panels: list[str], **kwargs) -> tuple[go.Figure, int]:
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=panels,
        shared_yaxes=True,
        vertical_spacing=min(0.3 / rows, 0.15),
        horizontal_spacing=0.08,
        **kwargs,
    )
    fig.update_layout(height=_ROW_HEIGHT * rows + 120)
    # One y range for every panel, across rows too, so panels compare at a glance.
    fig.update_yaxes(matches="y")
    return fig, cols


def _band(fig, x, low, high, color, *, row, col) -> None:
    fig.add_trace(
        go.Scatter(
            x=list(x) + list(x)[::-1],
            y=list(high) + list(low)[::-1],
            mode="lines",
            fill="toself",
            fillcolor=_rgba(color, 0.18),
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
        ),
        row=row,
        col=col,
    )


def quality_figure(
    quality: pd.DataFrame,
    metric: str = "map",
    title: str | None = None,
    *,
    variants: tuple[str, ...] = ("prefix", "pca", "random"),
) -> go.Figure:
    """Quality vs size per model: each of ``variants`` as a line with its bootstrap band
    (random dims: the band is the spread of the draws), the full embedding as a dotted line.
    """
    check_table(
        quality,
        {"model", "variant", "truncate_dim", "metric", "value", "ci_low", "ci_high"},
        "diagnose(...).quality",
    )
    data = quality[quality["metric"] == metric]
    if data.empty:
        raise ValueError(
            f"no rows of metric {metric!r}; the table has {sorted(set(quality.metric))}"
        )
    models = list(dict.fromkeys(data["model"]))
    fig, cols = _grid(models)
    for i, model in enumerate(models):
        row, col = i // cols + 1, i % cols + 1
        part = data[data["model"] == model]
        sizes = sorted(part.loc[part["variant"] != "full", "truncate_dim"].unique())
        for variant in variants:
            rows = part[part["variant"] == variant].sort_values("truncate_dim")
            if rows.empty:
                continue
            spread = variant == "random" and rows["draw_min"].notna().all()
            low = rows["draw_min"] if spread else rows["ci_low"]
            high = rows["draw_max"] if spread else rows["ci_high"]
            _band(fig, rows["truncate_dim"], low, high, _COLORS[variant], row=row, col=col)
            fig.add_trace(
                go.Scatter(
                    x=rows["truncate_dim"],
                    y=rows["value"],
                    mode="lines+markers",
                    name=VARIANT_LABELS[variant],
                    legendgroup=variant,
                    showlegend=i == 0,
                    line={
                        "color": _COLORS[variant],
                        "dash": "dash" if variant == "norm-first" else "solid",
                    },
                    customdata=rows[["ci_low", "ci_high"]].to_numpy(),
                    hovertemplate="m=%{x}: %{y:.1%} [%{customdata[0]:.1%}, %{customdata[1]:.1%}]"
                    f"<extra>{model}, {VARIANT_LABELS[variant]}</extra>",
                ),
                row=row,
                col=col,
            )
        full = part[part["variant"] == "full"]
        if len(full):
            fig.add_trace(
                go.Scatter(
                    x=[sizes[0], sizes[-1]],
                    y=[full["value"].iat[0]] * 2,
                    mode="lines",
                    name=VARIANT_LABELS["full"],
                    legendgroup="full",
                    showlegend=i == 0,
                    line={"color": _COLORS["full"], "dash": "dot"},
                    hovertemplate=f"full embedding: %{{y:.1%}}<extra>{model}</extra>",
                ),
                row=row,
                col=col,
            )
    size_axis(fig, data["truncate_dim"])
    name = str(data["metric_label"].iat[0]) if "metric_label" in data else metric
    percent_axis(fig, "")
    percent_axis(fig, name, col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.12, "x": 0})
    return style(fig, title or f"{name} of m dimensions: prefixes vs PCA vs random dims")


def shares_figure(shares: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Share of norm and of variance in the first m dims (solid, with bootstrap band) against
    the most any m directions hold (PCA, dashed) and an even spread (m / d, dotted grey);
    and the share of samples whose first m dims are all zero."""
    check_table(
        shares,
        {"model", "quantity", "variant", "truncate_dim", "value", "ci_low", "ci_high"},
        "diagnose(...).shares",
    )
    quantities = [q for q in ("norm", "variance", "empty") if q in set(shares["quantity"])]
    titles = {
        "norm": "Share of the squared norm",
        "variance": "Share of the variance",
        "empty": "Samples whose first m dims are all 0",
    }
    fig, cols = _grid([titles[q] for q in quantities])
    models = list(dict.fromkeys(shares["model"]))
    for i, quantity in enumerate(quantities):
        row, col = i // cols + 1, i % cols + 1
        for j, model in enumerate(models):
            color = qualitative.Plotly[j % len(qualitative.Plotly)]
            part = shares[(shares["quantity"] == quantity) & (shares["model"] == model)]
            prefix = part[part["variant"] == "prefix"].sort_values("truncate_dim")
            ceiling = part[part["variant"] == "pca"].sort_values("truncate_dim")
            _band(
                fig,
                prefix["truncate_dim"],
                prefix["ci_low"],
                prefix["ci_high"],
                color,
                row=row,
                col=col,
            )
            lines = [(prefix, "solid", "first m dims"), (ceiling, "dash", "top-m PCA")]
            for rows, dash, label in lines if len(ceiling) else lines[:1]:
                fig.add_trace(
                    go.Scatter(
                        x=rows["truncate_dim"],
                        y=rows["value"],
                        mode="lines+markers" if dash == "solid" else "lines",
                        name=f"{model}, {label}",
                        legendgroup=f"{model}, {label}",
                        showlegend=i == 0,
                        line={"color": color, "dash": dash},
                        hovertemplate=f"m=%{{x}}: %{{y:.1%}}<extra>{model}, {label}</extra>",
                    ),
                    row=row,
                    col=col,
                )
        if quantity == "empty":
            continue
        dims = sorted(shares["truncate_dim"].unique())
        fig.add_trace(
            go.Scatter(
                x=dims,
                y=[m / dims[-1] for m in dims],
                mode="lines",
                name="even spread (m / d)",
                legendgroup="even",
                showlegend=i == 0,
                line={"color": "rgb(150, 150, 150)", "dash": "dot"},
                hoverinfo="skip",
            ),
            row=row,
            col=col,
        )
    size_axis(fig, shares["truncate_dim"])
    percent_axis(fig, "")
    percent_axis(fig, "Share", col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.15, "x": 0})
    return style(fig, title or "How much of the embedding the first m dimensions hold")


def renormalization_figure(
    quality: pd.DataFrame, metric: str = "map", title: str | None = None
) -> go.Figure:
    """Truncated-then-normalized prefixes (correct) against normalized-then-truncated ones
    (the deployment bug), per model."""
    return quality_figure(
        quality,
        metric,
        title or "Renormalizing truncated vectors vs not (a common deployment bug)",
        variants=("prefix", "norm-first"),
    )


def verdict_figure(verdicts: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Per model, at the small sizes: prefixes − PCA and prefixes − random dims (points of
    the verdict metric) with their bootstrap intervals; right of 0, prefixes win."""
    check_table(
        verdicts,
        {"model", "verdict", "metric", "small_max", "vs_pca", "vs_random"},
        "diagnose(...).verdicts",
    )
    fig = go.Figure()
    for j, (key, label) in enumerate((("vs_pca", "vs PCA"), ("vs_random", "vs random dims"))):
        value = verdicts[key]
        fig.add_trace(
            go.Bar(
                y=[
                    f"{m} ({v})"
                    for m, v in zip(verdicts["model"], verdicts["verdict"], strict=True)
                ],
                x=value,
                orientation="h",
                name=f"first m dims {label}",
                marker_color=qualitative.Plotly[j + 1],
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": verdicts[f"{key}_high"] - value,
                    "arrayminus": value - verdicts[f"{key}_low"],
                },
                hovertemplate="%{y}: %{x:+.1%}<extra>" + label + "</extra>",
            )
        )
    fig.add_vline(x=0, line={"color": "rgb(90, 90, 90)", "width": 1})
    metric = verdicts["metric"].iat[0] if len(verdicts) else ""
    small = int(verdicts["small_max"].max()) if len(verdicts) else 0
    percent_axis(
        fig, f"Difference in {metric}, mean over m ≤ {small} (percentage points)", axis="x"
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        barmode="group",
        height=160 + 90 * len(verdicts),
        legend={"orientation": "h", "y": -0.25, "x": 0},
    )
    return style(fig, title or "Are the first m dimensions the right ones?")
