"""The explorer's numbers for one model's eval set at any truncation size.

:class:`ExplorerState` computes everything the explorer shows from the embedding cache it
is handed, with vectorized numpy / faiss, memoized per size, so that it can be used, tested
and benchmarked without a frontend:

* per-size predictions ``[G, N]`` for the nesting sizes are computed once up front; for
  MRL-E any other size ``m`` gets its logits from the cached features and shared head
  the first time it is asked for (then memoized);
* at a size: accuracy, superclass accuracy, a fine or superclass confusion matrix and
  the disagreement list against the largest size (:mod:`mrl_analysis.interpret.disagreement`);
* for one image: its top-5 classes, its nearest neighbours at that size (faiss, cosine
  on the truncated features) and its Grad-CAM at that size (computed on demand, memoized
  per (image, size); needs the model and the images). Grad-CAMs are computed one at a
  time, so the widget may ask for them from a background thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd
import torch

from mrl_analysis.core.numeric import softmax
from mrl_analysis.data.hierarchy import SuperclassMap, resolve_superclasses
from mrl_analysis.explore.study import match_images
from mrl_analysis.interpret.cams import DEFAULT_CAM, CamSettings, size_cams
from mrl_analysis.interpret.disagreement import find_disagreements
from mrl_analysis.interpret.images import image_to_rgb, overlay_cam

Level = Literal["fine", "superclass"]


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


class ExplorerState:
    """The explorer's numbers, vectorized and memoized (see the module docstring).

    ``cache``: an :class:`~mrl_analysis.cache.reader.EmbeddingCache` (or any object with
    its attributes). ``images``: a ``DatasetBundle`` (matched to the cache by
    ``sample_ids``) or any torch ``Dataset`` in the cache's sample order; needed for
    thumbnails and Grad-CAM. ``model``: needed for Grad-CAM; ``cam_settings``: its method,
    target and layer (:class:`~mrl_analysis.interpret.cams.CamSettings`). ``smap``: superclass map
    (default: the cache's hierarchy, through
    :func:`~mrl_analysis.data.hierarchy.resolve_superclasses`). ``reference``: the size
    disagreements are measured against (default the largest nesting size; at that size
    itself, the smallest).
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
        cam_settings: CamSettings = DEFAULT_CAM,
        reference: int | None = None,
    ) -> None:
        self.cache = cache
        self.model = model
        self.nesting = [int(m) for m in cache.nesting]
        self.kind = cache.kind
        # MRL-E's shared head works at every size its loss trained: up to the largest nesting
        # size, which may be below the backbone's width (ShuffleNet: 1024 features, 512 trained).
        self.sizes = list(range(1, self.nesting[-1] + 1)) if self.kind == "mrl-e" else self.nesting
        self.labels = np.asarray(cache.labels, dtype=np.int64)
        self.n = len(self.labels)
        self.class_names = list(cache.class_names)
        if smap is None and cache.hierarchy:
            smap = resolve_superclasses(cache.class_ids, cache.class_names, cache.hierarchy)
        self.smap = smap
        self.reference = self.nesting[-1] if reference is None else int(reference)
        self.n_neighbours = int(n_neighbours)
        self.n_disagreements = int(n_disagreements)
        self.cam_settings = cam_settings
        self.dataset, self.positions = match_images(images, cache.sample_ids)
        # The one pass over all nesting sizes; everything else is per size, on demand.
        self.predictions = np.argmax(cache.logits(), axis=2)  # [G, N]
        # float32 in memory once: every size is a view of it (a float16 cache would
        # otherwise be converted again at each new size).
        self.features = cache.features()
        self._head = cache.head() if self.kind == "mrl-e" else None
        self._prefix_sq: np.ndarray | None = None
        self._logits: OrderedDict[int, np.ndarray] = OrderedDict()
        self._predictions: dict[int, np.ndarray] = {}
        self._accuracy: dict[int, tuple[float, float | None]] = {}
        self._cams: dict[tuple[int, int], np.ndarray] = {}
        # pytorch-grad-cam hooks the model's layer: two CAMs at once would mix activations.
        self._cam_lock = threading.Lock()
        self._normalized = lru_cache(maxsize=4)(self._normalized_features)
        self._disagreements = lru_cache(maxsize=32)(self._disagreement_table)

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
        """``(accuracy, superclass accuracy)`` at ``size`` (the latter None without a map;
        memoized: the explorer's summary line reads it first on every move)."""
        m = self.check_size(size)
        if m not in self._accuracy:
            preds = self.predictions_at(m)
            fine = float(np.mean(preds == self.labels))
            coarse = None
            if self.smap is not None:
                coarse = float(np.mean(self.smap.of(preds) == self.smap.of(self.labels)))
            self._accuracy[m] = (fine, coarse)
        return self._accuracy[m]

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
        probs = softmax(self.logits(size)[i], dtype=np.float64)
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

    def rgb(self, sample: int) -> np.ndarray:
        """``sample``'s image as displayable ``uint8 [H, W, 3]`` RGB."""
        return (image_to_rgb(self.image(sample)) * 255).round().astype(np.uint8)

    def cam(self, sample: int, size: int) -> np.ndarray:
        """Grad-CAM ``[H, W]`` of ``sample`` at ``size`` (memoized per (sample, size); one
        computation at a time, whichever thread asks)."""
        i, m = self.check_sample(sample), self.check_size(size)
        if self.model is None:
            raise ValueError("Grad-CAM needs the model: pass model= (load_model(...))")
        with self._cam_lock:
            if (i, m) not in self._cams:
                result = size_cams(
                    self.model,
                    self.image(i)[None],
                    [m],
                    labels=self.labels[i : i + 1],
                    settings=self.cam_settings,
                )
                self._cams[(i, m)] = result.cams[0, 0]
            return self._cams[(i, m)]

    def cam_overlay(self, sample: int, size: int) -> np.ndarray:
        """``sample``'s Grad-CAM at ``size`` blended over its image: ``uint8 [H, W, 3]``."""
        return overlay_cam(self.image(sample), self.cam(sample, size))

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
        """Accuracy and superclass accuracy at every nesting size (tidy, fractions)."""
        rows = []
        for m in self.nesting:
            fine, coarse = self.accuracy(m)
            rows.append({"truncate_dim": m, "metric": "accuracy", "value": fine})
            if coarse is not None:
                rows.append({"truncate_dim": m, "metric": "superclass_accuracy", "value": coarse})
        return pd.DataFrame(rows)

    def sample_panels(self, view: ExplorerView, *, cam: bool) -> list[tuple[str, np.ndarray]]:
        """``(title, uint8 RGB)`` images of ``view``'s sample: the image, its CAM when
        ``cam``, its neighbours; none without images."""
        if self.dataset is None:
            return []
        i, names = view.sample, self.class_names
        panels = [(f"#{i}: {names[self.labels[i]]}", self.rgb(i))]
        if cam:
            title = f"{self.cam_settings.method_name} at m={view.size}"
            panels.append((title, self.cam_overlay(i, view.size)))
        neighbours = view.neighbours
        cosines = cosine_texts(neighbours["similarity"].to_numpy())
        for row, cos in zip(neighbours.itertuples(), cosines, strict=True):
            title = f"#{row.neighbour} {short_name(row.label_name, 10)}<br>cos {cos}"
            panels.append((title, self.rgb(row.neighbour)))
        return panels


def sample_table(view: ExplorerView) -> pd.DataFrame:
    """The sample snapshot's table: its top-5 classes, then its neighbours."""
    neighbours = view.neighbours
    return pd.concat(
        [
            view.top.assign(kind="top-5", sample_index=view.sample)[
                ["kind", "sample_index", "rank", "class", "name", "probability"]
            ],
            neighbours.assign(
                kind="neighbour",
                sample_index=neighbours["neighbour"],
                rank=np.arange(1, len(neighbours) + 1),
                name=neighbours["label_name"],
            )[["kind", "sample_index", "rank", "label", "name", "similarity"]].rename(
                columns={"label": "class"}
            ),
        ],
        ignore_index=True,
    )


def cosine_texts(similarities: np.ndarray) -> list[str]:
    """Cosine similarities as text with enough decimals (3 to 6) that none reads as an
    exact 0 or ±1 it is not (float32 noise below 1e-6 aside)."""
    values = np.asarray(similarities, dtype=np.float64)
    for decimals in range(3, 7):
        rounded = np.round(values, decimals)
        exact_looking = (np.abs(rounded) == 1) | (rounded == 0)
        if not (exact_looking & (np.abs(values - rounded) > 1e-6)).any():
            break
    return [f"{v:.{decimals}f}" for v in values]


def short_name(name: str, width: int = 14) -> str:
    """``name`` cut to ``width`` characters with an ellipsis."""
    return name if len(name) <= width else name[: width - 1] + "…"


def _empty_disagreements() -> pd.DataFrame:
    columns = ["direction", "rank", "sample_index", "label", "pred_small", "pred_large"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
