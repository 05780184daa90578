"""Saving figures: every figure is a plot of a tidy table, saved next to it as CSV.

``save_figure`` writes ``<name>.html`` (interactive), ``<name>.png`` (static, through
kaleido and a Chromium) and ``<name>.csv`` (the table it plots), plus SVG/PDF on request.

The HTML pages work offline: they load plotly.js from ``plotly-<version>.min.js`` in their
own folder (written once per folder, :func:`plotlyjs_bundle`), never from a CDN, so a figure
folder can be opened, copied or archived as it is.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
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


#: Seconds a kept Chromium may take to start, and to render one image, before it is dropped.
OPEN_TIMEOUT = 60.0
RENDER_TIMEOUT = 60.0


class _KeptBrowser:
    """One Chromium kept for this process's static exports: kaleido's async API on an event
    loop of its own (a daemon thread), so that it also works inside a kernel's running loop.

    kaleido starts a Chromium for every ``write_image``: ~2.5 s of each ~2.8 s PNG
    (benchmarks/bench_figures.py). kaleido's own sync server keeps one, but a render that
    never returns (seen once in ~40 demo notebooks) leaves its caller waiting forever; here
    every start and render has a deadline, after which this browser is dropped for good and
    the export falls back to the one-shot path. Closed at exit.
    """

    def __init__(self) -> None:
        import kaleido

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="kept-chromium", daemon=True).start()
        self._kaleido = kaleido.Kaleido()
        # Started in the background: the notebook goes on while Chromium comes up.
        self._opened = asyncio.run_coroutine_threadsafe(self._kaleido.open(), self._loop)
        atexit.register(self.close)

    def render(self, fig: go.Figure, fmt: str, scale: float) -> bytes:
        """The image's bytes, as plotly's ``write_image`` would write them (kaleido takes the
        size from the figure's layout, its template, else 700 x 500, as plotly does)."""
        self._opened.result(OPEN_TIMEOUT)
        call = self._kaleido.calc_fig(fig.to_dict(), opts={"format": fmt, "scale": scale})
        return asyncio.run_coroutine_threadsafe(call, self._loop).result(RENDER_TIMEOUT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._kaleido.close(), self._loop).result(10)


_browser: _KeptBrowser | None = None
_browser_dropped = False


def _write_static(fig: go.Figure, tmp: Path, fmt: str, scale: float) -> None:
    """Export through the kept Chromium when there is one; else (and when it fails or runs
    past its deadline, dropping it) one-shot, keeping a Chromium after the first success."""
    global _browser, _browser_dropped
    if _browser is not None:
        try:
            tmp.write_bytes(_browser.render(fig, fmt, scale))
            return
        except Exception as err:  # a timeout, a dead Chromium: one-shot from now on
            logging.getLogger(__name__).warning("kept Chromium dropped (%r); one-shot exports", err)
            _browser, _browser_dropped = None, True
    # The first export of a process is a one-shot: if Chromium cannot start it raises,
    # where a kept one would only time out later.
    fig.write_image(tmp, format=fmt, scale=scale)
    if _browser is None and not _browser_dropped:
        _browser = _KeptBrowser()


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
            _write_static(fig, tmp, fmt, scale)
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
