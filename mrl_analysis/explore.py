"""Interactive exploration of one model's eval set across truncation sizes (ipywidgets).

:class:`ExplorerState` holds everything the widgets show, computed from an
:class:`~mrl_analysis.cache.EmbeddingCache` with vectorized numpy / faiss and memoized per
size, so that it can be used, tested and benchmarked without a frontend:

* per-size predictions ``[G, N]`` for the nesting sizes are computed once up front; for
  MRL-E any other size ``m`` gets its logits from the cached features and shared head
  the first time it is asked for (then memoized);
* at a size: accuracy, superclass accuracy, a fine or superclass confusion matrix and
  the disagreement list against the largest size (:mod:`mrl_analysis.disagreement`);
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
from collections.abc import Callable, Sequence
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

from mrl_analysis.disagreement import cache_superclass_map, find_disagreements
from mrl_analysis.gradcam import image_to_rgb, overlay_cam, size_cams
from mrl_analysis.superclass import SuperclassMap

__all__ = [
    "Explorer",
    "ExplorerState",
    "ExplorerView",
    "confusion_figure",
    "explore",
    "load_inputs",
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

    The cache lives where :func:`mrl_analysis.experiment.build_caches` puts it and is
    built (or refreshed, when stale) if needed.
    """
    from mrl_analysis.checkpoints import load_model
    from mrl_analysis.datasets import get_dataset
    from mrl_analysis.experiment import build_caches

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
        self.sizes = (
            list(range(1, cache.feature_dim + 1)) if self.kind == "mrl-e" else self.nesting
        )
        self.labels = np.asarray(cache.labels, dtype=np.int64)
        self.n = len(self.labels)
        self.class_names = list(cache.class_names)
        self.smap = smap if smap is not None else cache_superclass_map(
            cache.hierarchy, cache.class_ids
        )
        self.reference = self.nesting[-1] if reference is None else int(reference)
        self.n_neighbours = int(n_neighbours)
        self.n_disagreements = int(n_disagreements)
        self.cam_method = cam_method
        self.cam_target = cam_target
        self.dataset, self.positions = self._match_images(images)
        # The one pass over all nesting sizes; everything else is per size, on demand.
        self.predictions = np.argmax(cache.logits(), axis=2)  # [G, N]
        self.correct = self.predictions == self.labels[None, :]
        self._logits: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cams: dict[tuple[int, int], np.ndarray] = {}
        self._normalized = lru_cache(maxsize=4)(self._normalized_features)
        self._disagreements = lru_cache(maxsize=32)(self._disagreement_table)

    # ------------------------------------------------------------------ inputs

    def _match_images(self, images: Any) -> tuple[Dataset | None, np.ndarray | None]:
        if images is None:
            return None, None
        if hasattr(images, "dataset") and hasattr(images, "sample_ids"):
            known = pd.Index(list(images.sample_ids))
            positions = known.get_indexer(pd.Index(self.cache.sample_ids))
            if (positions < 0).any():
                missing = np.asarray(self.cache.sample_ids)[positions < 0][:3].tolist()
                raise ValueError(
                    f"{int((positions < 0).sum())} cached samples (e.g. {missing}) are not in "
                    "the dataset given: load the split the cache was built from"
                )
            return images.dataset, positions
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
            out = self.cache.logits_at(m)
        self._logits[m] = out
        if len(self._logits) > 16:
            self._logits.popitem(last=False)
        return out

    def predictions_at(self, size: int) -> np.ndarray:
        m = self.check_size(size)
        if m in self.nesting:
            return self.predictions[self.nesting.index(m)]
        return self.logits(m).argmax(axis=1)

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
        if other == m:
            return find_disagreements(
                self.logits(m)[None], self.labels, [m], small=m, large=m + 1, top=0
            ) if False else _empty_disagreements()
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
        return np.ascontiguousarray(self.cache.features(m, normalize=True))

    def neighbours(self, sample: int, size: int) -> pd.DataFrame:
        """Nearest neighbours of ``sample`` among the eval set at ``size`` (faiss, cosine)."""
        i, m = self.check_sample(sample), self.check_size(size)
        base = self._normalized(m)
        k = min(self.n_neighbours + 1, self.n)
        sims, idx = faiss.knn(base[i : i + 1], base, k, metric=faiss.METRIC_INNER_PRODUCT)
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
