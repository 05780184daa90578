"""The findings figure: one row per finding, its effect with its interval, colored by verdict.

Effects have different units (fractions of accuracy, ratios of sizes, log2 steps), so each
finding gets its own x axis, with its threshold as a dashed line; effects measured as
fractions are shown as percent.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrl_analysis.core.findings import FAILS, HOLDS, UNMEASURED
from mrl_analysis.figures.style import style

VERDICT_COLORS = {HOLDS: "#1a7f37", FAILS: "#cf222e", UNMEASURED: "#8c959f"}
_ROW_PX = 100


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def findings_figure(table: pd.DataFrame, title: str = "The paper's findings") -> go.Figure:
    """One row per finding of ``table`` (:func:`~mrl_analysis.findings.study.paper_findings`):
    the effect's value and interval, colored by verdict, beside its threshold."""
    if table.empty:
        raise ValueError("the findings table is empty: nothing to plot")
    rows = len(table)
    fig = make_subplots(
        rows=rows,
        cols=1,
        vertical_spacing=min(0.6 / rows, 0.08),
        subplot_titles=[
            f"({r.finding}) {_shorten(_sentence(r.claim), 90)}: <b>{r.verdict}</b>"
            for r in table.itertuples(index=False)
        ],
    )
    shown: set[str] = set()
    for i, r in enumerate(table.itertuples(index=False), start=1):
        percent = "fraction" in r.effect.lower()
        axis = {"row": i, "col": 1}
        fig.update_yaxes(visible=False, range=[-1, 1], **axis)
        if math.isnan(r.value):
            fig.add_annotation(
                text=_shorten(str(r.reason), 110),
                x=0.5,
                y=0,
                xref=f"x{i if i > 1 else ''} domain",
                yref=f"y{i if i > 1 else ''}",
                showarrow=False,
                font={"color": VERDICT_COLORS[UNMEASURED]},
            )
            fig.update_xaxes(visible=False, **axis)
            continue
        color = VERDICT_COLORS.get(r.verdict, VERDICT_COLORS[UNMEASURED])
        fig.add_trace(
            go.Scatter(
                x=[r.value],
                y=[0],
                mode="markers",
                marker={"color": color, "size": 11},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r.ci_high - r.value],
                    "arrayminus": [r.value - r.ci_low],
                    "color": color,
                    "thickness": 2,
                    "width": 6,
                },
                name=r.verdict,
                legendgroup=r.verdict,
                showlegend=r.verdict not in shown,
                hovertemplate=f"{r.effect}<br>%{{x}} [{r.ci_low:.4g}, {r.ci_high:.4g}]"
                "<extra></extra>",
            ),
            **axis,
        )
        shown.add(r.verdict)
        fig.add_vline(x=r.threshold, line_dash="dash", line_color="#57606a", **axis)
        low, high = min(r.ci_low, r.threshold), max(r.ci_high, r.threshold)
        pad = 0.15 * (high - low) or 0.05 * max(abs(high), 1e-3)
        fig.update_xaxes(
            range=[low - pad, high + pad],
            tickformat=".1~%" if percent else None,
            zeroline=False,
            title={"text": _shorten(r.effect, 120), "font": {"size": 11}, "standoff": 2},
            **axis,
        )
    style(fig, title)
    for annotation in fig.layout.annotations[:rows]:  # the subplot titles
        annotation.update(x=0, xanchor="left", font={"size": 12})
    fig.update_layout(
        height=140 + _ROW_PX * rows,
        # Below the last axis title: at the top it would sit on the first finding's title.
        margin={"l": 30, "r": 30, "t": 80, "b": 70},
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 0.005,
            "yanchor": "bottom",
            "x": 0.5,
            "xanchor": "center",
        },
    )
    return fig
