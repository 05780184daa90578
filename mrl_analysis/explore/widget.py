"""The explorer's ipywidgets front end: a size slider over an :class:`ExplorerState`.

:class:`Explorer` wires the state to widgets: a size slider (the nesting sizes; every size
for MRL-E), a fine/superclass toggle, a sample picker and a "Grad-CAM" switch; below them
a summary line, the confusion matrix (a plotly heat map, through JupyterLab's plotly
renderer) beside the disagreement table, and the sample panel (image, Grad-CAM, top-5
classes, nearest neighbours). The whole widget is about 720 px tall, so in JupyterLab in
a 1100 px window the slider and the sample panel are visible together.

What a slider move costs is ordered by what the user waits for:

1. the summary line (accuracy at the new size, memoized per size) is sent first, before
   anything else is computed;
2. then the sample panel: the top-5 table and the neighbour thumbnails (memoized PNG
   bytes: a widget whose value did not change sends nothing);
3. then the disagreement table and the heat map (only when the size or level changed;
   the heat map's plotly JSON is built once and only its numbers change, and it is the
   browser's slowest part to draw, so it comes last);
4. the Grad-CAM last, on a background thread, so that the next move never waits for it;
   a CAM that a later move has made stale is not drawn (nor computed, if it had not
   started).

Headless (the batch runner) widgets do not render, so :meth:`Explorer.snapshot_figures`
draws the current state as ordinary figures (:mod:`mrl_analysis.explore.plots`) for
``save_figure``.
"""

from __future__ import annotations

import html
import io
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mrl_analysis.explore.plots import ConfusionBundles, overview_figure, sample_figure
from mrl_analysis.explore.state import (
    ExplorerState,
    ExplorerView,
    Level,
    cosine_texts,
    sample_table,
    short_name,
)

#: Pixel sizes of the layout (see the module docstring for the height budget).
HEATMAP_PX = (430, 380)
IMAGE_PX = 112
THUMB_PX = 56

_CELL = "padding:2px 10px;border-bottom:1px solid #d0d7de;white-space:nowrap"
_NUMBER_CELL = _CELL + ";text-align:right;font-variant-numeric:tabular-nums"

# ------------------------------------------------------------------- rendering


def _png(rgb: np.ndarray, min_pixels: int = 0) -> bytes:
    factor = max(1, -(-min_pixels // max(rgb.shape[:2]))) if min_pixels else 1
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary_html(size: int, accuracy: float, coarse: float | None, state: ExplorerState) -> str:
    superclass = (
        ""
        if coarse is None
        else f' · superclass accuracy <b class="mrl-superclass-accuracy">{_fmt(coarse)}</b>'
    )
    return (
        f'<div class="mrl-summary" style="font-size:14px">size m = '
        f'<b class="mrl-size">{size}</b> of {state.sizes[-1]} ({state.kind}, N = {state.n:,})'
        f' · top-1 accuracy <b class="mrl-accuracy">{_fmt(accuracy)}</b>{superclass}</div>'
    )


def table_html(columns: dict[str, Sequence[Any]], css_class: str) -> str:
    """An HTML table of ``columns`` (name → values): padded cells, floats to 3 decimals
    (right-aligned), a header row."""

    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return f'<td style="{_NUMBER_CELL}">{value:.3f}</td>'
        style = _NUMBER_CELL if isinstance(value, int | np.integer) else _CELL
        return f'<td style="{style}">{html.escape(str(value))}</td>'

    head = "".join(
        f'<th style="{_CELL};text-align:left">{html.escape(name)}</th>' for name in columns
    )
    body = "".join(
        "<tr>" + "".join(cell(v) for v in row) + "</tr>"
        for row in zip(*columns.values(), strict=True)
    )
    return (
        f'<table class="{css_class}" style="border-collapse:collapse;font-size:12px">'
        f"<tr>{head}</tr>{body}</table>"
    )


def _disagreement_html(table: pd.DataFrame, state: ExplorerState) -> str:
    if table.empty:
        return '<div class="mrl-disagreements">no disagreements at this size</div>'
    lo, hi = int(table["small_dim"].iloc[0]), int(table["large_dim"].iloc[0])
    names = state.class_names
    kinds = {"fixed": f"✗ at {lo}, ✓ at {hi}", "broken": f"✓ at {lo}, ✗ at {hi}"}
    shown = {
        "kind": [kinds[d] for d in table["direction"]],
        "sample": table["sample_index"].tolist(),
        "true": [short_name(names[c], 18) for c in table["label"]],
        f"pred @{lo}": [short_name(names[c], 18) for c in table["pred_small"]],
        f"pred @{hi}": [short_name(names[c], 18) for c in table["pred_large"]],
        "confusion": [c if isinstance(c, str) else "" for c in table["confusion"]],
    }
    title = (
        f'<div style="margin-bottom:4px"><b>Disagreements between sizes {lo} and {hi}</b> '
        "(most confident first; pick one above to inspect it)</div>"
    )
    return f'<div class="mrl-disagreements">{title}{table_html(shown, "mrl-table")}</div>'


def _sample_html(view: ExplorerView, state: ExplorerState) -> str:
    i = view.sample
    label = state.class_names[state.labels[i]]
    best = view.top.iloc[0]
    mark = "✓" if best["is_label"] else "✗"
    top = {
        "rank": view.top["rank"].tolist(),
        "class": [short_name(n, 22) for n in view.top["name"]],
        "probability": view.top["probability"].tolist(),
    }
    return (
        f'<div class="mrl-sample-info">sample <b class="mrl-sample">{i}</b> · true '
        f"<b>{html.escape(label)}</b><br>prediction at m={view.size}: "
        f'<b class="mrl-prediction">{html.escape(str(best["name"]))}</b> {mark}'
        f'<div style="margin-top:4px">{table_html(top, "mrl-top5")}</div></div>'
    )


def _error_html(err: BaseException) -> str:
    detail = html.escape("".join(traceback.format_exception(err)))
    return f'<pre class="mrl-error" style="color:#cf222e">{detail}</pre>'


# --------------------------------------------------------------------- widgets


class Explorer:
    """The ipywidgets front end of an :class:`ExplorerState` (display it in a notebook).

    ``timings`` holds the last update's seconds: ``summary`` (until the summary line was
    sent), ``update`` (everything but the CAM) and ``cam`` (on its thread).
    """

    def __init__(
        self,
        state: ExplorerState,
        *,
        size: int | None = None,
        sample: int | None = None,
        level: Level = "fine",
        show_cam: bool = True,
        thumbnail_pixels: int = THUMB_PX,
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
        self._drawn: dict[str, Any] = {}  # what the size-only parts show: size, level
        self._heatmaps: dict[str, ConfusionBundles] = {}  # per level
        self._cam_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrl-cam")
        self._cam_lock = threading.Lock()  # a ticket and the CAM widgets change together
        self._cam_ticket = 0
        self._cam_future: Future | None = None
        can_cam = state.model is not None and state.dataset is not None

        self.size_slider = w.SelectionSlider(
            options=state.sizes,
            value=size,
            description="size m",
            continuous_update=False,
            layout=w.Layout(width="460px"),
        )
        self.size_slider.add_class("mrl-size-slider")
        self.level = w.ToggleButtons(
            options=["fine", "superclass"] if state.smap is not None else ["fine"],
            value=level,
            description="confusion",
            style={"button_width": "100px"},
        )
        self.sample_box = w.BoundedIntText(
            value=state.check_sample(sample),
            min=0,
            max=state.n - 1,
            description="sample",
            layout=w.Layout(width="180px"),
        )
        self.picker = w.Dropdown(
            options=[("—", None)],
            value=None,
            description="pick a case",
            layout=w.Layout(width="280px"),
        )
        self.cam_toggle = w.Checkbox(
            value=bool(show_cam and can_cam),
            description="Grad-CAM",
            disabled=not can_cam,
            indent=False,
            layout=w.Layout(width="110px"),
        )
        self.summary = w.HTML()
        self.errors = w.HTML()
        self.confusion = w.Output(
            layout=w.Layout(width=f"{HEATMAP_PX[0]}px", height=f"{HEATMAP_PX[1]}px")
        )
        self.confusion.add_class("mrl-confusion")
        self.disagreement_html = w.HTML(
            layout=w.Layout(max_height=f"{HEATMAP_PX[1]}px", overflow="auto", flex="1 1 auto")
        )
        self.sample_html = w.HTML(layout=w.Layout(width="300px"))
        self.image = w.Image(format="png", width=IMAGE_PX, height=IMAGE_PX)
        self.cam_image = w.Image(format="png", width=IMAGE_PX, height=IMAGE_PX)
        self.cam_caption = w.HTML(layout=w.Layout(width=f"{IMAGE_PX + 20}px"))
        k = state.n_neighbours
        self.thumbs = [
            w.Image(format="png", width=self.thumbnail_pixels, height=self.thumbnail_pixels)
            for _ in range(k)
        ]
        self.thumb_captions = [w.HTML() for _ in range(k)]

        cell = f"{self.thumbnail_pixels + 30}px"
        neighbours = w.VBox(
            [
                w.HTML("<b>Nearest neighbours at this size</b> (faiss, cosine)"),
                w.GridBox(
                    [w.VBox([t, c]) for t, c in zip(self.thumbs, self.thumb_captions, strict=True)],
                    layout=w.Layout(grid_template_columns=f"repeat(4, {cell})", grid_gap="2px"),
                ),
            ]
        )
        sample_panel = w.HBox(
            [
                w.VBox([self.image, w.HTML("image")]),
                w.VBox([self.cam_image, self.cam_caption]),
                self.sample_html,
                neighbours,
            ],
            layout=w.Layout(grid_gap="12px", align_items="flex-start"),
        )
        sample_panel.add_class("mrl-sample-panel")
        self.widget = w.VBox(
            [
                w.HBox([self.size_slider, self.level]),
                w.HBox([self.sample_box, self.picker, self.cam_toggle]),
                self.summary,
                self.errors,
                w.HBox(
                    [self.confusion, self.disagreement_html],
                    layout=w.Layout(align_items="flex-start", grid_gap="12px"),
                ),
                sample_panel,
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
        """Redraw the current (size, sample, level) in the order of the module docstring;
        errors are shown inline."""
        if self._busy:
            return
        self._busy = True
        try:
            start = time.perf_counter()
            m, i, level = self.size, self.sample, self.level.value
            self.summary.value = _summary_html(m, *self.state.accuracy(m), self.state)
            self.timings["summary"] = time.perf_counter() - start
            self._draw(self.state.view(m, i, level))
            self.timings["update"] = time.perf_counter() - start
            self.errors.value = ""
            self._request_cam()
        except Exception as err:  # a widget callback's exception would vanish into a log
            self.errors.value = _error_html(err)
        finally:
            self._busy = False

    def _draw(self, view: ExplorerView) -> None:
        state = self.state
        self.sample_html.value = _sample_html(view, state)
        if state.dataset is not None:
            self.image.value = self.thumbnail(view.sample, IMAGE_PX)
            neighbours = view.neighbours
            cosines = cosine_texts(neighbours["similarity"].to_numpy())
            rows = zip(
                self.thumbs, self.thumb_captions, neighbours.itertuples(), cosines, strict=False
            )
            for thumb, caption, row, cos in rows:
                thumb.value = self.thumbnail(row.neighbour, self.thumbnail_pixels)
                mark = "✓" if row.same_label else "✗"
                caption.value = (
                    f'<span class="mrl-neighbour" style="font-size:11px;line-height:1.2">'
                    f"#{row.neighbour} {mark}<br>{html.escape(short_name(row.label_name, 11))}"
                    f"<br>cos {cos}</span>"
                )
        if self._drawn.get("size") != view.size:
            self.disagreement_html.value = _disagreement_html(view.disagreements, state)
            cases = view.disagreements
            self.picker.options = [("—", None)] + [
                (f"#{s} ({d})", int(s))
                for s, d in zip(cases["sample_index"], cases["direction"], strict=True)
            ]
            self.picker.value = None
            self._drawn["size"] = view.size
        if self._drawn.get("confusion") != (view.size, view.level):
            if view.level not in self._heatmaps:
                self._heatmaps[view.level] = ConfusionBundles(
                    view.confusion_labels, width=HEATMAP_PX[0], height=HEATMAP_PX[1]
                )
            level = "superclass" if view.level == "superclass" else "class"
            title = f"{level} confusion at m = {view.size} (share of row)"
            bundle = self._heatmaps[view.level].bundle(view.confusion, title)
            self.confusion.outputs = (
                {"output_type": "display_data", "data": bundle, "metadata": {}},
            )
            self._drawn["confusion"] = (view.size, view.level)

    # --------------------------------------------------------------- Grad-CAM

    def _request_cam(self) -> None:
        """Draw the CAM of the current (sample, size) on the CAM thread (or "off")."""
        sample, size = self.sample, self.size
        with self._cam_lock:
            self._cam_ticket += 1
            if not self.cam_toggle.value:
                self.cam_image.value = b""
                self.cam_caption.value = "Grad-CAM off"
                return
            self.cam_caption.value = (
                f'<span class="mrl-cam-pending" style="font-size:11px">computing '
                f"{self.state.cam_settings.method_name} at m={size}…</span>"
            )
            self._cam_future = self._cam_pool.submit(self._draw_cam, self._cam_ticket, sample, size)

    def _draw_cam(self, ticket: int, sample: int, size: int) -> None:
        if ticket != self._cam_ticket:  # a later move came first: skip the work
            return
        start = time.perf_counter()
        try:
            png = _png(self.state.cam_overlay(sample, size), IMAGE_PX)
        except Exception as err:  # shown like the main thread's errors
            with self._cam_lock:
                if ticket == self._cam_ticket:
                    self.errors.value = _error_html(err)
            return
        settings = self.state.cam_settings
        with self._cam_lock:
            if ticket != self._cam_ticket:
                return
            self.cam_image.value = png
            self.cam_caption.value = (
                f'<span class="mrl-cam-caption" style="font-size:11px">{settings.method_name} '
                f"at m={size} ({settings.target})</span>"
            )
            self.timings["cam"] = time.perf_counter() - start

    def wait_for_cam(self, timeout: float | None = None) -> None:
        """Block until the last requested CAM is drawn (for scripts and tests)."""
        if self._cam_future is not None:
            self._cam_future.result(timeout)

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
