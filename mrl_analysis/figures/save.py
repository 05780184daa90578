"""Saving figures: every figure is a plot of a tidy table, saved next to it as CSV.

``save_figure`` writes ``<name>.html`` (interactive), ``<name>.png`` (static, through
kaleido and a Chromium) and ``<name>.csv`` (the table it plots), plus SVG/PDF on request.

The HTML pages work offline: they load plotly.js from ``plotly-<version>.min.js`` in their
own folder (written once per folder, :func:`plotlyjs_bundle`), never from a CDN, so a figure
folder can be opened, copied or archived as it is.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from mrl_analysis.core.paths import env_project_root, find_project_root, project_root

STATIC_FORMATS = ("png", "svg", "pdf")


def plotlyjs_bundle(folder: str | os.PathLike) -> Path:
    """``plotly-<version>.min.js`` in ``folder``, written (atomically) if it is not there yet.

    The name carries plotly's version, so pages written after an upgrade get the bundle they
    were made for while older pages in the same folder keep theirs.
    """
    import plotly
    from plotly.offline import get_plotlyjs

    path = Path(folder) / f"plotly-{plotly.__version__}.min.js"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, path)
    return path


def figure_dir(default: str | os.PathLike | None = None) -> Path:
    """Where :func:`save_figure` writes when given no ``out_dir``.

    ``$MRL_FIGURES_DIR`` when set (the batch runner sets it to the entry's folder), else
    ``default`` when given, else the project's ``figures/`` folder — never one relative to
    wherever the kernel started (JupyterLab starts it in ``notebooks/``). The project is
    ``$MRL_PROJECT_ROOT``, else the one at or above the current directory, else the one
    holding this package. In JupyterLab (which names the notebook in ``$JPY_SESSION_NAME``)
    each notebook gets its own subfolder: ``figures/<notebook>/``.
    """
    if os.environ.get("MRL_FIGURES_DIR"):
        return Path(os.environ["MRL_FIGURES_DIR"])
    if default is not None:
        return Path(default)
    root = env_project_root() or project_root(Path.cwd()) or find_project_root()
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    if notebook.endswith(".ipynb"):
        return root / "figures" / Path(notebook).stem
    return root / "figures"


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


def _keep_browser() -> None:
    """Once a static export has succeeded, keep one Chromium for this process's later ones.

    kaleido starts a Chromium for every image unless its sync server runs: ~2.5 s of each
    ~2.8 s PNG (benchmarks/bench_figures.py). The first export stays a one-shot because a
    server whose Chromium fails to start leaves every call waiting forever, while a one-shot
    raises; once one has succeeded the server's start is safe. It starts in the background,
    is a no-op when running already, and kaleido closes it at exit.
    """
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)


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
            bundle = plotlyjs_bundle(out)
            fig.write_html(tmp, include_plotlyjs=bundle.name, include_mathjax=False)
        elif fmt in STATIC_FORMATS:
            _prepare_static_export()
            with warnings.catch_warnings():
                # plotly passes its request headers, which only a one-shot export uses.
                warnings.filterwarnings("ignore", "The kopts argument is ignored", UserWarning)
                fig.write_image(tmp, format=fmt, scale=scale)
            _keep_browser()
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
