"""The explorer's ipywidgets front end: a size slider over an :class:`ExplorerState`.

:class:`Explorer` wires the state to widgets: a size slider (the nesting sizes; every size
for MRL-E), a fine/superclass toggle, a sample picker and a "Grad-CAM" switch. Its images
are PNGs drawn with PIL (an update costs milliseconds and needs no JavaScript). Headless
(the batch runner) widgets do not render, so :meth:`Explorer.snapshot_figures` draws the
current state as ordinary figures (:mod:`mrl_analysis.explore.plots`) for ``save_figure``.
"""

from __future__ import annotations

import html
import io
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from mrl_analysis.explore.plots import overview_figure, sample_figure
from mrl_analysis.explore.state import (
    ExplorerState,
    ExplorerView,
    Level,
    sample_table,
    short_name,
)

# ------------------------------------------------------------------- rendering


def _png(rgb: np.ndarray, min_pixels: int = 0) -> bytes:
    factor = max(1, -(-min_pixels // max(rgb.shape[:2]))) if min_pixels else 1
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=1)
    return buf.getvalue()


@lru_cache(maxsize=1)
def _blues() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["Blues"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


_LEFT, _TOP = 110, 16


@lru_cache(maxsize=8)
def _labelled_canvas(names: tuple[str, ...], cell: int) -> Image.Image:
    k = len(names)
    canvas = Image.new("RGB", (_LEFT + k * cell + 4, _TOP + k * cell + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((2, _TOP + c * cell + cell // 2 - 5), f"{c} {short_name(name)}", fill="black")
        draw.text((_LEFT + c * cell + cell // 2 - 3, 2), str(c), fill="black")
    return canvas


def confusion_png(counts: np.ndarray, names: Sequence[str], *, pixels: int = 300) -> bytes:
    """A row-normalized confusion matrix as a PNG heat map (rows true, columns predicted).

    Drawn with PIL rather than plotly so that an update costs milliseconds and needs no
    JavaScript; classes are labelled when there are at most 30, counts written in the
    cells when they are large enough.
    """
    k = len(names)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    cell = max(2, pixels // k)
    grid = _blues()[np.round(share * 255).astype(np.int64)]
    grid = np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)
    if k > 30:
        return _png(grid)
    canvas = _labelled_canvas(tuple(str(n) for n in names), cell).copy()
    canvas.paste(Image.fromarray(grid), (_LEFT, _TOP))
    if cell >= 24:
        draw = ImageDraw.Draw(canvas)
        for c, p in zip(*np.nonzero(counts), strict=True):
            color = "white" if share[c, p] > 0.6 else "black"
            xy = (_LEFT + p * cell + 3, _TOP + c * cell + cell // 2 - 5)
            draw.text(xy, str(counts[c, p]), fill=color)
    buf = io.BytesIO()
    canvas.save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary_html(view: ExplorerView, state: ExplorerState) -> str:
    coarse = (
        ""
        if view.superclass_accuracy is None
        else " · superclass accuracy "
        f'<b class="mrl-superclass-accuracy">{_fmt(view.superclass_accuracy)}</b>'
    )
    return (
        f'<div class="mrl-summary">size m = <b class="mrl-size">{view.size}</b> of '
        f"{state.sizes[-1]} ({state.kind}, N = {state.n}) · accuracy "
        f'<b class="mrl-accuracy">{_fmt(view.accuracy)}</b>{coarse}</div>'
    )


def _table_html(columns: dict[str, Sequence[Any]], css_class: str) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        "<tr>" + "".join(cell(v) for v in row) + "</tr>"
        for row in zip(*columns.values(), strict=True)
    )
    return f'<table class="{css_class}"><tr>{head}</tr>{body}</table>'


def _disagreement_html(table: pd.DataFrame, state: ExplorerState) -> str:
    if table.empty:
        return '<div class="mrl-disagreements">no disagreements at this size</div>'
    lo, hi = int(table["small_dim"].iloc[0]), int(table["large_dim"].iloc[0])
    names = state.class_names
    kinds = {"fixed": f"✗ at {lo}, ✓ at {hi}", "broken": f"✓ at {lo}, ✗ at {hi}"}
    shown = {
        "kind": [kinds[d] for d in table["direction"]],
        "sample": table["sample_index"].tolist(),
        "true": [names[c] for c in table["label"]],
        f"pred @{lo}": [names[c] for c in table["pred_small"]],
        f"pred @{hi}": [names[c] for c in table["pred_large"]],
        "confusion": [c if isinstance(c, str) else "" for c in table["confusion"]],
    }
    title = f"<b>Disagreements between sizes {lo} and {hi}</b> (most confident first)"
    return f'<div class="mrl-disagreements">{title}{_table_html(shown, "mrl-table")}</div>'


def _sample_html(view: ExplorerView, state: ExplorerState) -> str:
    i = view.sample
    label = state.class_names[state.labels[i]]
    best = view.top.iloc[0]
    mark = "✓" if best["is_label"] else "✗"
    top = {
        "rank": view.top["rank"].tolist(),
        "name": view.top["name"].tolist(),
        "probability": view.top["probability"].tolist(),
    }
    return (
        f'<div class="mrl-sample-info">sample <b class="mrl-sample">{i}</b> · true '
        f"<b>{html.escape(label)}</b> · prediction at m={view.size}: "
        f'<b class="mrl-prediction">{html.escape(str(best["name"]))}</b> {mark}'
        f"{_table_html(top, 'mrl-top5')}</div>"
    )


# --------------------------------------------------------------------- widgets


class Explorer:
    """The ipywidgets front end of an :class:`ExplorerState` (display it in a notebook).

    ``timings`` holds the last update's seconds: ``update`` (everything but the CAM)
    and ``cam``.
    """

    def __init__(
        self,
        state: ExplorerState,
        *,
        size: int | None = None,
        sample: int | None = None,
        level: Level = "fine",
        show_cam: bool = True,
        thumbnail_pixels: int = 64,
    ) -> None:
        import ipywidgets as w

        self.state = state
        size = state.nesting[0] if size is None else state.check_size(size)
        if sample is None:
            first = state.disagreements(size)
            sample = int(first["sample_index"].iloc[0]) if len(first) else 0
        self.thumbnail_pixels = int(thumbnail_pixels)
        self._thumbnails: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self.timings: dict[str, float] = {}
        self._busy = False
        can_cam = state.model is not None and state.dataset is not None

        self.size_slider = w.SelectionSlider(
            options=state.sizes,
            value=size,
            description="size m",
            continuous_update=False,
            layout=w.Layout(width="480px"),
        )
        self.size_slider.add_class("mrl-size-slider")
        self.level = w.ToggleButtons(
            options=["fine", "superclass"] if state.smap is not None else ["fine"],
            value=level,
            description="confusion",
            style={"button_width": "90px"},
        )
        self.sample_box = w.BoundedIntText(
            value=state.check_sample(sample), min=0, max=state.n - 1, description="sample"
        )
        self.picker = w.Dropdown(options=[("—", None)], value=None, description="pick a case")
        self.cam_toggle = w.Checkbox(
            value=bool(show_cam and can_cam), description="Grad-CAM", disabled=not can_cam
        )
        self.summary = w.HTML()
        self.confusion_image = w.Image(format="png")
        self.disagreement_html = w.HTML()
        self.sample_html = w.HTML()
        self.image = w.Image(format="png", width=128, height=128)
        self.cam_image = w.Image(format="png", width=128, height=128)
        self.cam_caption = w.HTML()
        k = state.n_neighbours
        self.thumbs = [w.Image(format="png", width=56, height=56) for _ in range(k)]
        self.thumb_captions = [w.HTML() for _ in range(k)]
        self.errors = w.HTML()

        controls = w.HBox([self.size_slider, self.level])
        picks = w.HBox([self.sample_box, self.picker, self.cam_toggle])
        neighbours = w.HBox(
            [w.VBox([t, c]) for t, c in zip(self.thumbs, self.thumb_captions, strict=True)]
        )
        self.widget = w.VBox(
            [
                controls,
                picks,
                self.summary,
                self.errors,
                w.HBox([self.confusion_image, self.disagreement_html]),
                w.HBox(
                    [
                        w.VBox([self.image, w.HTML("image")]),
                        w.VBox([self.cam_image, self.cam_caption]),
                        self.sample_html,
                    ]
                ),
                w.HTML("<b>Nearest neighbours at this size</b> (faiss, cosine)"),
                neighbours,
            ]
        )
        self.widget.add_class("mrl-explorer")
        self.size_slider.observe(lambda _: self.refresh(), names="value")
        self.sample_box.observe(lambda _: self.refresh(), names="value")
        self.level.observe(lambda _: self.refresh(), names="value")
        self.cam_toggle.observe(lambda _: self.refresh(), names="value")
        self.picker.observe(self._picked, names="value")
        self.refresh()

    @property
    def size(self) -> int:
        return int(self.size_slider.value)

    @property
    def sample(self) -> int:
        return int(self.sample_box.value)

    def thumbnail(self, sample: int, pixels: int) -> bytes:
        """PNG of ``sample``'s image at least ``pixels`` wide (memoized)."""
        key = (self.state.check_sample(sample), int(pixels))
        if key not in self._thumbnails:
            self._thumbnails[key] = _png(self.state.rgb(key[0]), key[1])
            if len(self._thumbnails) > 4096:
                self._thumbnails.popitem(last=False)
        return self._thumbnails[key]

    def _picked(self, change: dict) -> None:
        if not self._busy and change["new"] is not None:
            self.sample_box.value = int(change["new"])

    def set_size(self, size: int) -> None:
        self.size_slider.value = self.state.check_size(size)

    def set_sample(self, sample: int) -> None:
        self.sample_box.value = self.state.check_sample(sample)

    def refresh(self) -> None:
        """Recompute and redraw the current (size, sample, level); errors are shown inline."""
        if self._busy:
            return
        self._busy = True
        try:
            start = time.perf_counter()
            self._draw(self.state.view(self.size, self.sample, self.level.value))
            self.timings["update"] = time.perf_counter() - start
            start = time.perf_counter()
            self._draw_cam()
            self.timings["cam"] = time.perf_counter() - start
            self.errors.value = ""
        except Exception as err:  # a widget callback's exception would vanish into a log
            detail = html.escape("".join(traceback.format_exception(err)))
            self.errors.value = f'<pre class="mrl-error" style="color:#cf222e">{detail}</pre>'
        finally:
            self._busy = False

    def _draw(self, view: ExplorerView) -> None:
        state = self.state
        self.summary.value = _summary_html(view, state)
        self.confusion_image.value = confusion_png(view.confusion, view.confusion_labels)
        self.disagreement_html.value = _disagreement_html(view.disagreements, state)
        cases = view.disagreements
        self.picker.options = [("—", None)] + [
            (f"#{s} ({d})", int(s))
            for s, d in zip(cases["sample_index"], cases["direction"], strict=True)
        ]
        self.picker.value = None
        self.sample_html.value = _sample_html(view, state)
        if state.dataset is None:
            return
        self.image.value = self.thumbnail(view.sample, 128)
        rows = view.neighbours.itertuples()
        for thumb, caption, row in zip(self.thumbs, self.thumb_captions, rows, strict=False):
            thumb.value = self.thumbnail(row.neighbour, self.thumbnail_pixels)
            mark = "✓" if row.same_label else "✗"
            caption.value = (
                f'<span class="mrl-neighbour" style="font-size:11px">#{row.neighbour} '
                f"{html.escape(short_name(row.label_name, 10))} {mark}<br>"
                f"cos {row.similarity:.2f}</span>"
            )

    def _draw_cam(self) -> None:
        if not self.cam_toggle.value:
            self.cam_image.value = b""
            self.cam_caption.value = "Grad-CAM off"
            return
        state = self.state
        self.cam_image.value = _png(state.cam_overlay(self.sample, self.size), 128)
        self.cam_caption.value = (
            f'<span class="mrl-cam-caption">{state.cam_settings.method_name} at m={self.size} '
            f"({state.cam_settings.target})</span>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------- static figures

    def snapshot_figures(self) -> dict[str, tuple[Any, pd.DataFrame]]:
        """The current state as static plotly figures with their tables (for headless runs).

        ``{"overview": accuracy vs size + confusion matrix, "sample": the image, its CAM
        and its neighbours}``.
        """
        state = self.state
        view = state.view(self.size, self.sample, self.level.value)
        accuracy = state.accuracy_table()
        panels = state.sample_panels(view, cam=bool(self.cam_toggle.value))
        return {
            "overview": (overview_figure(accuracy, view, state.nesting, state.kind), accuracy),
            "sample": (sample_figure(view, panels), sample_table(view)),
        }


def explore(
    cache: Any,
    *,
    model: torch.nn.Module | None = None,
    images: Any = None,
    size: int | None = None,
    sample: int | None = None,
    level: Level = "fine",
    show_cam: bool = True,
    **state_options: Any,
) -> Explorer:
    """An :class:`Explorer` over ``cache`` (see :class:`ExplorerState` for the options)."""
    state = ExplorerState(cache, model=model, images=images, **state_options)
    return Explorer(state, size=size, sample=sample, level=level, show_cam=show_cam)
