"""Saving figures: every figure is a plot of a tidy table, saved next to it as CSV.

``save_figure`` writes ``<name>.html`` (interactive), ``<name>.png`` (static, through
kaleido and a Chromium) and ``<name>.csv`` (the table it plots), plus SVG/PDF on request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

STATIC_FORMATS = ("png", "svg", "pdf")


def figure_dir(default: str | os.PathLike = "figures") -> Path:
    """The output folder: ``$MRL_FIGURES_DIR`` if set (the batch runner sets it)."""
    return Path(os.environ.get("MRL_FIGURES_DIR", default))


class _IgnoredPipeMessage(logging.Filter):
    """choreographer logs, with a traceback, a Chromium pipe message it cannot decode and then
    ignores: the export still succeeds, but in a notebook the traceback reads as a failure.
    A real export failure still raises from ``write_image``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "JSONError decoding message" not in record.getMessage()


def _prepare_static_export() -> None:
    # logistro (kaleido's logging) gives its loggers extra methods: create this one its way,
    # a plain logging.getLogger first would leave choreographer a logger without them.
    import logistro

    pipe_logger = logistro.getLogger("choreographer.channels.pipe")
    if not any(isinstance(f, _IgnoredPipeMessage) for f in pipe_logger.filters):
        pipe_logger.addFilter(_IgnoredPipeMessage())
    # kaleido >= 1 drives a Chromium; Debian installs it at /usr/bin/chromium, which
    # kaleido's own lookup (choreographer) does not always find on its own.
    if "BROWSER_PATH" not in os.environ:
        for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
            if Path(candidate).exists():
                os.environ["BROWSER_PATH"] = candidate
                break


def save_figure(
    fig: go.Figure,
    table: pd.DataFrame | None,
    name: str,
    out_dir: str | os.PathLike | None = None,
    formats: Iterable[str] | None = None,
    scale: float = 2.0,
) -> dict[str, Path]:
    """Write ``fig`` (and ``table`` as CSV) under ``out_dir``; return the paths written.

    ``formats`` defaults to ``$MRL_FIGURE_FORMATS`` (comma-separated; the batch runner
    sets it from a batch's ``figure_formats``), else HTML + PNG.

    Files are written to a temporary name and renamed, so an interrupted export never
    leaves a half-written figure behind under the real name.
    """
    out = Path(out_dir) if out_dir is not None else figure_dir()
    out.mkdir(parents=True, exist_ok=True)
    if formats is None:
        formats = os.environ.get("MRL_FIGURE_FORMATS", "html,png").split(",")
    written: dict[str, Path] = {}
    for fmt in formats:
        fmt = fmt.strip().lower()
        path = out / f"{name}.{fmt}"
        tmp = out / f".{name}.tmp.{fmt}"
        if fmt == "html":
            fig.write_html(tmp, include_plotlyjs="cdn")
        elif fmt in STATIC_FORMATS:
            _prepare_static_export()
            fig.write_image(tmp, format=fmt, scale=scale)
        else:
            raise ValueError(f"unknown figure format {fmt!r}: use html, png, svg or pdf")
        os.replace(tmp, path)
        written[fmt] = path
    if table is not None:
        path = out / f"{name}.csv"
        tmp = out / f".{name}.tmp.csv"
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
        written["csv"] = path
    return written
