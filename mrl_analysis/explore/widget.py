"""Interactive exploration of one model's eval set across truncation sizes (ipywidgets).

:class:`ExplorerState` holds everything the widgets show, computed from an
:class:`~mrl_analysis.cache.reader.EmbeddingCache` with vectorized numpy / faiss and memoized per
size, so that it can be used, tested and benchmarked without a frontend:

* per-size predictions ``[G, N]`` for the nesting sizes are computed once up front; for
  MRL-E any other size ``m`` gets its logits from the cached features and shared head
  the first time it is asked for (then memoized);
* at a size: accuracy, superclass accuracy, a fine or superclass confusion matrix and
  the disagreement list against the largest size (:mod:`mrl_analysis.interpret.disagreement`);
* for one image: its top-5 classes, its nearest neighbours at that size (faiss, cosine
  on the truncated features) and its Grad-CAM at that size (computed on demand, memoized
  per (image, size); needs the model and the images).

:class:`Explorer` wires it to widgets: a size slider (the nesting sizes; every size for
MRL-E), a fine/superclass toggle, a sample picker and a "Grad-CAM" switch. Headless (the
batch runner) widgets do not render, so :meth:`Explorer.snapshot_figures` draws the
initial state as ordinary plotly figures for ``save_figure``.
"""

from __future__ import annotations

import html
import io
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots
from torch.utils.data import Dataset

from mrl_analysis.data.hierarchy import SuperclassMap
from mrl_analysis.interpret.disagreement import cache_superclass_map, find_disagreements
from mrl_analysis.interpret.gradcam import image_to_rgb, overlay_cam, size_cams

__all__ = [
    "Explorer",
    "ExplorerState",
    "ExplorerView",
    "confusion_figure",
    "confusion_png",
    "explore",
    "load_inputs",
    "sample_positions",
]

Level = Literal["fine", "superclass"]


def load_inputs(
    models: dict[str, str | os.PathLike],
    model: str,
    dataset: str,
    split: str = "test",
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Any, Any, Any]:
    """``(model, bundle, cache)`` for the checkpoint named ``model`` in ``models``.

    The cache lives where :func:`mrl_analysis.cache.experiment.build_caches` puts it and is
    built (or refreshed, when stale) if needed.
    """
    from mrl_analysis.cache.experiment import build_caches
    from mrl_analysis.data.datasets import get_dataset
    from mrl_analysis.models.checkpoints import load_model

    if model not in models:
        raise ValueError(f"model {model!r} is not one of the named checkpoints {list(models)}")
    caches = build_caches(
        {model: models[model]},
        dataset,
        [split],
        cache_root=cache_root,
        data_root=data_root,
        progress=progress,
    )
    bundle = get_dataset(dataset, split, root=data_root)
    return load_model(models[model]), bundle, caches[model][split]


def sample_positions(bundle: Any, sample_ids: Sequence[str]) -> np.ndarray:
    """Positions in ``bundle.dataset`` of the samples ``sample_ids`` (e.g. a cache's)."""
    positions = pd.Index(list(bundle.sample_ids)).get_indexer(pd.Index(list(sample_ids)))
    if (positions < 0).any():
        missing = np.asarray(sample_ids)[positions < 0][:3].tolist()
        raise ValueError(
            f"{int((positions < 0).sum())} samples (e.g. {missing}) are not in the dataset "
            "given: load the split the cache was built from"
        )
    return positions.astype(np.int64)


@dataclass
class ExplorerView:
    """What the explorer shows for one (size, sample, level)."""

    size: int
    sample: int
    level: Level
    accuracy: float
    superclass_accuracy: float | None
    confusion: np.ndarray  # [K, K], rows = true, columns = predicted
    confusion_labels: list[str]
    disagreements: pd.DataFrame
    top: pd.DataFrame  # top-5 classes of the sample at this size
    neighbours: pd.DataFrame  # nearest neighbours of the sample at this size


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ExplorerState:
    """The explorer's numbers, vectorized and memoized (see the module docstring).

    ``images``: a ``DatasetBundle`` (matched to the cache by ``sample_ids``) or any torch
    ``Dataset`` in the cache's sample order; needed for thumbnails and Grad-CAM.
    ``model``: needed for Grad-CAM. ``smap``: superclass map (default: the cache's
    hierarchy). ``reference``: the size disagreements are measured against (default the
    largest nesting size; at that size itself, the smallest).
    """

    def __init__(
        self,
        cache: Any,
        *,
        model: torch.nn.Module | None = None,
        images: Any = None,
        smap: SuperclassMap | None = None,
        n_neighbours: int = 8,
        n_disagreements: int = 10,
        cam_method: str = "gradcam",
        cam_target: str = "predicted",
        reference: int | None = None,
    ) -> None:
        self.cache = cache
        self.model = model
        self.nesting = [int(m) for m in cache.nesting]
        self.kind = cache.kind
        self.sizes = list(range(1, cache.feature_dim + 1)) if self.kind == "mrl-e" else self.nesting
        self.labels = np.asarray(cache.labels, dtype=np.int64)
        self.n = len(self.labels)
        self.class_names = list(cache.class_names)
        self.smap = (
            smap if smap is not None else cache_superclass_map(cache.hierarchy, cache.class_ids)
        )
        self.reference = self.nesting[-1] if reference is None else int(reference)
        self.n_neighbours = int(n_neighbours)
        self.n_disagreements = int(n_disagreements)
        self.cam_method = cam_method
        self.cam_target = cam_target
        self.dataset, self.positions = self._match_images(images)
        # The one pass over all nesting sizes; everything else is per size, on demand.
        self.predictions = np.argmax(cache.logits(), axis=2)  # [G, N]
        # float32 in memory once: every size is a view of it (a float16 cache would
        # otherwise be converted again at each new size).
        self.features = cache.features()
        self._head = cache.head() if self.kind == "mrl-e" else None
        self._prefix_sq: np.ndarray | None = None
        self._thumbnails: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._logits: OrderedDict[int, np.ndarray] = OrderedDict()
        self._predictions: dict[int, np.ndarray] = {}
        self._cams: dict[tuple[int, int], np.ndarray] = {}
        self._normalized = lru_cache(maxsize=4)(self._normalized_features)
        self._disagreements = lru_cache(maxsize=32)(self._disagreement_table)

    # ------------------------------------------------------------------ inputs

    def _match_images(self, images: Any) -> tuple[Dataset | None, np.ndarray | None]:
        if images is None:
            return None, None
        if hasattr(images, "dataset") and hasattr(images, "sample_ids"):
            return images.dataset, sample_positions(images, self.cache.sample_ids)
        if len(images) != self.n:
            raise ValueError(
                f"the dataset has {len(images)} samples and the cache {self.n}: pass the "
                "DatasetBundle (matched by sample_ids) or a dataset in the cache's order"
            )
        return images, np.arange(self.n)

    def check_size(self, size: int) -> int:
        m = int(size)
        if m not in self.sizes:
            what = f"1..{self.sizes[-1]}" if self.kind == "mrl-e" else str(self.nesting)
            raise ValueError(f"size {m} is not available for this {self.kind} cache: use {what}")
        return m

    def check_sample(self, sample: int) -> int:
        i = int(sample)
        if not 0 <= i < self.n:
            raise ValueError(f"sample {i} is out of range: the cache has {self.n} samples")
        return i

    # ------------------------------------------------------------- per size

    def logits(self, size: int) -> np.ndarray:
        """Logits ``[N, C]`` at ``size`` (memoized; MRL-E sizes from features + head)."""
        m = self.check_size(size)
        if m in self._logits:
            self._logits.move_to_end(m)
            return self._logits[m]
        if m in self.nesting:
            out = np.asarray(self.cache.logits()[self.nesting.index(m)], dtype=np.float32)
        else:
            weight, bias = self._head
            out = self.features[:, :m] @ weight[:, :m].T + bias
        self._logits[m] = out
        if len(self._logits) > 16:
            self._logits.popitem(last=False)
        return out

    def predictions_at(self, size: int) -> np.ndarray:
        """Predicted classes ``[N]`` at ``size``."""
        m = self.check_size(size)
        if m in self.nesting:
            return self.predictions[self.nesting.index(m)]
        if m not in self._predictions:
            self._predictions[m] = self.logits(m).argmax(axis=1)
        return self._predictions[m]

    def accuracy(self, size: int) -> tuple[float, float | None]:
        """``(accuracy, superclass accuracy)`` at ``size`` (the latter None without a map)."""
        preds = self.predictions_at(size)
        fine = float(np.mean(preds == self.labels))
        if self.smap is None:
            return fine, None
        return fine, float(np.mean(self.smap.of(preds) == self.smap.of(self.labels)))

    def confusion(self, size: int, level: Level = "fine") -> tuple[np.ndarray, list[str]]:
        """Counts ``[K, K]`` (rows true, columns predicted) and the K class names."""
        preds, labels = self.predictions_at(size), self.labels
        if level == "superclass":
            if self.smap is None:
                raise ValueError("this cache has no class hierarchy: use level='fine'")
            preds, labels, names = self.smap.of(preds), self.smap.of(labels), self.smap.names
        elif level == "fine":
            names = self.class_names
        else:
            raise ValueError(f"level must be 'fine' or 'superclass', not {level!r}")
        k = len(names)
        counts = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
        return counts, list(names)

    def disagreements(self, size: int) -> pd.DataFrame:
        """The top cases where ``size`` and the reference size disagree (both directions)."""
        return self._disagreements(self.check_size(size))

    def _disagreement_table(self, m: int) -> pd.DataFrame:
        other = self.reference if m != self.reference else self.nesting[0]
        if other == m:  # a single-size (FF) model disagrees with nothing
            return _empty_disagreements()
        lo, hi = sorted((m, other))
        return find_disagreements(
            np.stack([self.logits(lo), self.logits(hi)]),
            self.labels,
            [lo, hi],
            smap=self.smap,
            class_names=self.class_names,
            top=self.n_disagreements,
        )

    # ----------------------------------------------------------- per sample

    def top_classes(self, sample: int, size: int, k: int = 5) -> pd.DataFrame:
        """The ``k`` most probable classes of ``sample`` at ``size``."""
        i = self.check_sample(sample)
        probs = _softmax(self.logits(size)[i])
        order = np.argsort(-probs, kind="stable")[:k]
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(order) + 1),
                "class": order,
                "name": [self.class_names[c] for c in order],
                "probability": probs[order],
                "is_label": order == self.labels[i],
            }
        )

    def _normalized_features(self, m: int) -> np.ndarray:
        if self._prefix_sq is None:  # squared norms of every prefix, once: [N, d]
            self._prefix_sq = np.cumsum(np.square(self.features), axis=1, dtype=np.float32)
        norms = np.sqrt(self._prefix_sq[:, m - 1])
        return self.features[:, :m] * (1 / np.maximum(norms, np.finfo(np.float32).tiny))[:, None]

    def neighbours(self, sample: int, size: int) -> pd.DataFrame:
        """Nearest neighbours of ``sample`` among the eval set at ``size`` (faiss, cosine)."""
        i, m = self.check_sample(sample), self.check_size(size)
        base = self._normalized(m)
        k = min(self.n_neighbours + 1, self.n)
        # One query gains nothing from OpenMP, whose thread wake-ups cost ~30 ms on a busy box.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            sims, idx = faiss.knn(base[i : i + 1], base, k, metric=faiss.METRIC_INNER_PRODUCT)
        finally:
            faiss.omp_set_num_threads(threads)
        keep = idx[0] != i
        idx, sims = idx[0][keep][: self.n_neighbours], sims[0][keep][: self.n_neighbours]
        preds = self.predictions_at(m)[idx]
        return pd.DataFrame(
            {
                "neighbour": idx,
                "similarity": sims,
                "label": self.labels[idx],
                "label_name": [self.class_names[c] for c in self.labels[idx]],
                "same_label": self.labels[idx] == self.labels[i],
                "predicted": preds,
            }
        )

    def image(self, sample: int) -> torch.Tensor:
        """The model-ready image tensor ``[C, H, W]`` of ``sample``."""
        if self.dataset is None:
            raise ValueError("no images: pass images= (the DatasetBundle of the cached split)")
        return self.dataset[int(self.positions[self.check_sample(sample)])][0]

    def thumbnail(self, sample: int, pixels: int) -> bytes:
        """PNG of ``sample``'s image at least ``pixels`` wide (memoized)."""
        key = (self.check_sample(sample), int(pixels))
        if key not in self._thumbnails:
            rgb = (image_to_rgb(self.image(key[0])) * 255).round().astype(np.uint8)
            self._thumbnails[key] = _png(rgb, key[1])
            if len(self._thumbnails) > 4096:
                self._thumbnails.popitem(last=False)
        return self._thumbnails[key]

    def cam(self, sample: int, size: int) -> np.ndarray:
        """Grad-CAM ``[H, W]`` of ``sample`` at ``size`` (memoized per (sample, size))."""
        i, m = self.check_sample(sample), self.check_size(size)
        if (i, m) not in self._cams:
            if self.model is None:
                raise ValueError("Grad-CAM needs the model: pass model= (load_model(...))")
            result = size_cams(
                self.model,
                self.image(i)[None],
                [m],
                labels=self.labels[i : i + 1],
                target=self.cam_target,
                method=self.cam_method,
            )
            self._cams[(i, m)] = result.cams[0, 0]
        return self._cams[(i, m)]

    # ------------------------------------------------------------------ all

    def view(self, size: int, sample: int, level: Level = "fine") -> ExplorerView:
        """Everything but the CAM and thumbnails for one (size, sample, level)."""
        m, i = self.check_size(size), self.check_sample(sample)
        accuracy, super_accuracy = self.accuracy(m)
        counts, names = self.confusion(m, level)
        return ExplorerView(
            size=m,
            sample=i,
            level=level,
            accuracy=accuracy,
            superclass_accuracy=super_accuracy,
            confusion=counts,
            confusion_labels=names,
            disagreements=self.disagreements(m),
            top=self.top_classes(i, m),
            neighbours=self.neighbours(i, m),
        )

    def accuracy_table(self) -> pd.DataFrame:
        """Accuracy and superclass accuracy at every nesting size (tidy)."""
        rows = []
        for m in self.nesting:
            fine, coarse = self.accuracy(m)
            rows.append({"truncate_dim": m, "metric": "accuracy", "value": fine})
            if coarse is not None:
                rows.append({"truncate_dim": m, "metric": "superclass_accuracy", "value": coarse})
        return pd.DataFrame(rows)


def _empty_disagreements() -> pd.DataFrame:
    columns = ["direction", "rank", "sample_index", "label", "pred_small", "pred_large"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


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


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


_LEFT, _TOP = 110, 16


@lru_cache(maxsize=8)
def _labelled_canvas(names: tuple[str, ...], cell: int) -> Image.Image:
    from PIL import ImageDraw

    k = len(names)
    canvas = Image.new("RGB", (_LEFT + k * cell + 4, _TOP + k * cell + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((2, _TOP + c * cell + cell // 2 - 5), f"{c} {_short(name)}", fill="black")
        draw.text((_LEFT + c * cell + cell // 2 - 3, 2), str(c), fill="black")
    return canvas


def confusion_png(counts: np.ndarray, names: Sequence[str], *, pixels: int = 300) -> bytes:
    """A row-normalized confusion matrix as a PNG heat map (rows true, columns predicted).

    Drawn with PIL rather than plotly so that an update costs milliseconds and needs no
    JavaScript; classes are labelled when there are at most 30, counts written in the
    cells when they are large enough.
    """
    from PIL import ImageDraw

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


def confusion_figure(counts: np.ndarray, names: Sequence[str], title: str = "") -> go.Figure:
    """The same confusion matrix as a plotly heat map (for static figures)."""
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(names),
            y=list(names),
            customdata=counts,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} (%{z:.1%})<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="predicted class")
    fig.update_layout(title=title)
    return fig


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
        self.image.value = state.thumbnail(view.sample, 128)
        rows = view.neighbours.itertuples()
        for thumb, caption, row in zip(self.thumbs, self.thumb_captions, rows, strict=False):
            thumb.value = state.thumbnail(row.neighbour, self.thumbnail_pixels)
            mark = "✓" if row.same_label else "✗"
            caption.value = (
                f'<span class="mrl-neighbour" style="font-size:11px">#{row.neighbour} '
                f"{html.escape(_short(row.label_name, 10))} {mark}<br>"
                f"cos {row.similarity:.2f}</span>"
            )

    def _draw_cam(self) -> None:
        if not self.cam_toggle.value:
            self.cam_image.value = b""
            self.cam_caption.value = "Grad-CAM off"
            return
        state = self.state
        cam = state.cam(self.sample, self.size)
        self.cam_image.value = _png(overlay_cam(state.image(self.sample), cam), 128)
        self.cam_caption.value = (
            f'<span class="mrl-cam-caption">{state.cam_method} at m={self.size} '
            f"({state.cam_target})</span>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------- static figures

    def snapshot_figures(self) -> dict[str, tuple[go.Figure, pd.DataFrame]]:
        """The current state as static plotly figures with their tables (for headless runs).

        ``{"overview": accuracy vs size + confusion matrix, "sample": the image, its CAM
        and its neighbours}``.
        """
        state, m, i = self.state, self.size, self.sample
        view = state.view(m, i, self.level.value)
        return {
            "overview": (self._overview_figure(view), state.accuracy_table()),
            "sample": self._sample_figure(view),
        }

    def _overview_figure(self, view: ExplorerView) -> go.Figure:
        state = self.state
        acc = state.accuracy_table()
        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.45, 0.55],
            subplot_titles=(
                "accuracy per size",
                f"{view.level} confusion at m={view.size} (row-normalized)",
            ),
        )
        for metric, frame in acc.groupby("metric", sort=False):
            fig.add_trace(
                go.Scatter(
                    x=frame["truncate_dim"], y=frame["value"], mode="lines+markers", name=metric
                ),
                row=1,
                col=1,
            )
        fig.add_vline(x=view.size, line_dash="dot", line_color="gray", row=1, col=1)
        heat = confusion_figure(view.confusion, view.confusion_labels).data[0]
        heat.showscale = False
        fig.add_trace(heat, row=1, col=2)
        fig.update_xaxes(type="log", title="size m", tickvals=state.nesting, row=1, col=1)
        fig.update_yaxes(title="accuracy", range=[0, 1.02], row=1, col=1)
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        fig.update_layout(
            width=1100,
            height=480,
            title=f"{state.kind} explorer at m={view.size}: accuracy {_fmt(view.accuracy)}",
            legend={"orientation": "h", "y": -0.2},
        )
        return fig

    def _sample_figure(self, view: ExplorerView) -> tuple[go.Figure, pd.DataFrame]:
        state = self.state
        i, names = view.sample, state.class_names
        table = pd.concat(
            [
                view.top.assign(kind="top-5", sample_index=i)[
                    ["kind", "sample_index", "rank", "class", "name", "probability"]
                ],
                view.neighbours.assign(
                    kind="neighbour",
                    sample_index=view.neighbours["neighbour"],
                    rank=np.arange(1, len(view.neighbours) + 1),
                    name=view.neighbours["label_name"],
                )[["kind", "sample_index", "rank", "label", "name", "similarity"]].rename(
                    columns={"label": "class"}
                ),
            ],
            ignore_index=True,
        )
        panels: list[tuple[str, np.ndarray]] = []
        if state.dataset is not None:
            image = state.image(i)
            panels.append((f"#{i}: {names[state.labels[i]]}", image_to_rgb(image)))
            if self.cam_toggle.value:
                cam = overlay_cam(image, state.cam(i, view.size))
                panels.append((f"{state.cam_method} at m={view.size}", cam / 255.0))
            for row in view.neighbours.itertuples():
                rgb = image_to_rgb(state.image(row.neighbour))
                panels.append((f"#{row.neighbour} {_short(row.label_name, 10)}", rgb))
        cols = max(1, len(panels)) + 1
        fig = make_subplots(
            rows=1,
            cols=cols,
            column_widths=[1] * (cols - 1) + [2],
            subplot_titles=[t for t, _ in panels] + [f"top-5 at m={view.size}"],
            horizontal_spacing=0.01,
        )
        for j, (_, rgb) in enumerate(panels):
            z = np.round(np.asarray(rgb) * 255).astype(np.uint8)
            fig.add_trace(go.Image(z=z, hoverinfo="skip"), row=1, col=j + 1)
            fig.update_xaxes(visible=False, row=1, col=j + 1)
            fig.update_yaxes(visible=False, row=1, col=j + 1)
        fig.add_trace(
            go.Bar(
                x=view.top["probability"],
                y=view.top["name"],
                text=[
                    f"{n} {p:.2f}"
                    for n, p in zip(view.top["name"], view.top["probability"], strict=True)
                ],
                textposition="outside",
                cliponaxis=False,
                orientation="h",
                marker_color=np.where(view.top["is_label"], "#1a7f37", "#8c959f").tolist(),
                showlegend=False,
            ),
            row=1,
            col=cols,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=cols)
        fig.update_xaxes(range=[0, 1], row=1, col=cols)
        for annotation in fig.layout.annotations:
            annotation.font = {"size": 10}
        fig.update_layout(
            width=max(700, 120 * cols + 200),
            height=280,
            title=f"sample {i} at m={view.size}: prediction {view.top['name'].iloc[0]}",
            margin={"t": 80},
        )
        return fig, table


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
