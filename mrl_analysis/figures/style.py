"""One look for every figure: the workbench template, the size axis and percent axes.

Tables hold fractions in [0, 1]; figures show them as percent through the axis format, so
the data behind a figure (its CSV) and the table a test checks are the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "mrl"
SIZE_TITLE = "Representation size (dims)"
#: Above this many distinct sizes, the size axis labels the powers of two only.
_MAX_TICKS = 12

# A copy of plotly_white updated in place: Template(base, layout=...) would replace the
# base's whole layout (colorway, backgrounds, grid colours) instead of adding to it.
_template = go.layout.Template(pio.templates["plotly_white"])
_template.layout.update(
    {
        "font": {"size": 13},
        "title": {"font": {"size": 16}, "x": 0.02, "xanchor": "left"},
        "legend": {"title": {"text": ""}},
        "margin": {"l": 70, "r": 30, "t": 70, "b": 60},
        "autosize": True,
    }
)
pio.templates[TEMPLATE] = _template


def size_ticks(sizes: Sequence[int] | np.ndarray) -> list[int]:
    """Tick values for a set of sizes: all of them, or the powers of two when dense."""
    values = sorted({int(m) for m in np.asarray(sizes).ravel() if np.isfinite(m) and m > 0})
    if len(values) <= _MAX_TICKS:
        return values
    lo, hi = int(np.floor(np.log2(values[0]))), int(np.ceil(np.log2(values[-1])))
    return [2**e for e in range(lo, hi + 1) if values[0] <= 2**e <= values[-1]]


def size_axis(
    fig: go.Figure,
    sizes: Sequence[int] | np.ndarray,
    *,
    axis: str = "x",
    title: str = SIZE_TITLE,
    **selector: int,
) -> go.Figure:
    """Make ``axis`` a log-2 size axis with plain ticks (1, 2, 4, …); ``selector``: row/col."""
    ticks = size_ticks(sizes)
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(
        type="log",
        title_text=title,
        tickvals=ticks,
        ticktext=[str(m) for m in ticks],
        minor={"showgrid": False},
        **selector,
    )
    return fig


def percent_axis(
    fig: go.Figure, title: str, *, axis: str = "y", decimals: int = 0, **selector: int
) -> go.Figure:
    """Show a fraction axis as percent; ``title`` names the quantity (the unit is added)."""
    update = fig.update_yaxes if axis == "y" else fig.update_xaxes
    update(title_text=title, tickformat=f".{decimals}%", **selector)
    return fig


def style(fig: go.Figure, title: str | None = None) -> go.Figure:
    """Apply the workbench template (and a title) to ``fig``."""
    fig.update_layout(template=TEMPLATE)
    if title is not None:
        fig.update_layout(title_text=title)
    return fig
