"""The interpretability study on caches, datasets and models: notebook 04 in a few calls.

The only module of the theme that reads an
:class:`~mrl_analysis.cache.reader.EmbeddingCache` or pulls images from a dataset:

* :func:`cache_disagreements`: the ranked disagreement cases of a cache, with its class
  names, sample ids and superclasses (the library's one resolver,
  :func:`~mrl_analysis.data.hierarchy.resolve_superclasses`);
* :func:`load_images`, :func:`dataset_cams`: images of a dataset and their CAMs per size,
  streamed in batches;
* :func:`case_cams`: the CAMs of the top disagreement cases (paper Figure 9);
  :func:`sample_cams`: the CAMs of a random sample of the eval set, for measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from mrl_analysis.core.checks import check_int
from mrl_analysis.data.hierarchy import SuperclassMap, resolve_superclasses
from mrl_analysis.interpret.cams import DEFAULT_CAM, CamSettings, SizeCams, size_cams
from mrl_analysis.interpret.disagreement import find_disagreements


def cache_superclasses(cache: Any) -> SuperclassMap | None:
    """The superclass map of the hierarchy stored in ``cache`` (None when it has none)."""
    if not cache.hierarchy:
        return None
    return resolve_superclasses(cache.class_ids, cache.class_names, cache.hierarchy)


def cache_disagreements(
    cache: Any,
    small: int | None = None,
    large: int | None = None,
    *,
    smap: SuperclassMap | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`~mrl_analysis.interpret.disagreement.find_disagreements` on an
    :class:`~mrl_analysis.cache.reader.EmbeddingCache`.

    Uses the cache's labels, class names, sample ids and (unless ``smap`` is given)
    hierarchy: the datasets' ``"other"`` group and classes the hierarchy leaves out form
    the reject group, which is not counted as a superclass. For an MRL-E cache
    ``small``/``large`` may be any size: their logits come from the cached features and
    shared head. ``kwargs`` go to ``find_disagreements``.
    """
    nesting = list(cache.nesting)
    lo = nesting[0] if small is None else check_int(small, "small")
    hi = nesting[-1] if large is None else check_int(large, "large")
    if {lo, hi} <= set(nesting):
        logits, sizes = cache.logits(), nesting
    else:
        sizes = sorted({*nesting, lo, hi})
        trained = cache.logits()  # the model's own logits wherever a size was trained
        logits = np.stack(
            [trained[nesting.index(m)] if m in nesting else cache.logits_at(m) for m in sizes]
        )
    return find_disagreements(
        logits,
        cache.labels,
        sizes,
        small=lo,
        large=hi,
        smap=cache_superclasses(cache) if smap is None else smap,
        class_names=kwargs.pop("class_names", cache.class_names),
        sample_ids=kwargs.pop("sample_ids", cache.sample_ids),
        **kwargs,
    )


def _check_indices(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("indices is empty: choose at least one sample")
    if indices.min() < 0 or indices.max() >= len(dataset):
        raise ValueError(f"indices must lie in 0..{len(dataset) - 1} (the dataset's size)")
    return indices


def load_images(
    dataset: Dataset, indices: Sequence[int] | np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    """``(images [n, C, H, W], labels [n])`` of ``dataset[i]`` for ``i`` in ``indices``."""
    indices = _check_indices(dataset, indices)
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=len(indices))
    images, labels = next(iter(loader))
    return images, torch.as_tensor(labels).numpy().astype(np.int64)


def dataset_cams(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int] | np.ndarray,
    sizes: Sequence[int] | None = None,
    *,
    settings: CamSettings = DEFAULT_CAM,
    images_per_batch: int = 16,
    progress: bool = True,
) -> SizeCams:
    """:func:`~mrl_analysis.interpret.cams.size_cams` for ``dataset[i]`` over ``indices``,
    ``images_per_batch`` at a time; labels come from the dataset, ``sample_index`` is the
    dataset position."""
    indices = _check_indices(dataset, indices)
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=images_per_batch)
    parts: list[SizeCams] = []
    done = 0
    for images, labels in tqdm(loader, desc="Grad-CAM", disable=not progress):
        part = size_cams(
            model,
            images,
            sizes,
            labels=labels.numpy(),
            settings=settings,
            sample_index=indices[done : done + len(labels)],
        )
        part.table["image"] += done
        parts.append(part)
        done += len(labels)
    first = parts[0]
    return SizeCams(
        cams=np.concatenate([p.cams for p in parts]),
        sizes=first.sizes,
        table=pd.concat([p.table for p in parts], ignore_index=True),
        method=first.method,
        target_layer=first.target_layer,
    )


def top_cases(cases: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` best-ranked cases of each direction of a disagreement table."""
    check_int(n, "n", low=0)
    return cases.groupby("direction", sort=False).head(n).reset_index(drop=True)


@dataclass(frozen=True)
class CaseCams:
    """CAMs of disagreement cases: the ``images`` they were computed on, the
    :class:`~mrl_analysis.interpret.cams.SizeCams` and the ``cases`` rows, in one order."""

    images: torch.Tensor
    cams: SizeCams
    cases: pd.DataFrame

    @property
    def table(self) -> pd.DataFrame:
        """The CAM table (one row per image × size) with each case's direction and confusion."""
        return self.cams.table.merge(self.cases[["sample_index", "direction", "confusion"]])


def case_cams(
    model: nn.Module,
    dataset: Dataset,
    positions: np.ndarray,
    cases: pd.DataFrame,
    sizes: Sequence[int] | None = None,
    settings: CamSettings = DEFAULT_CAM,
) -> CaseCams:
    """CAMs of ``cases`` (rows of a disagreement table; ``sample_index`` in cache order) at
    every size; ``positions``: cache index → dataset position (e.g.
    :func:`mrl_analysis.explore.study.sample_positions`)."""
    if cases.empty:
        raise ValueError("no disagreement cases to draw")
    index = cases["sample_index"].to_numpy()
    images, labels = load_images(dataset, np.asarray(positions)[index])
    result = size_cams(model, images, sizes, labels=labels, settings=settings, sample_index=index)
    return CaseCams(images=images, cams=result, cases=cases.reset_index(drop=True))


def sample_cams(
    model: nn.Module,
    dataset: Dataset,
    positions: np.ndarray,
    n: int,
    sizes: Sequence[int] | None = None,
    settings: CamSettings = DEFAULT_CAM,
    *,
    seed: int = 0,
    progress: bool = True,
) -> SizeCams:
    """CAMs of ``n`` random samples of the eval set (all of it when smaller), drawn with
    ``seed`` in cache order and sorted; the table's ``sample_index`` is the cache index."""
    positions = np.asarray(positions)
    n = min(check_int(n, "n", low=1), len(positions))
    chosen = np.sort(np.random.default_rng(seed).choice(len(positions), n, replace=False))
    result = dataset_cams(
        model, dataset, positions[chosen], sizes, settings=settings, progress=progress
    )
    result.table["sample_index"] = chosen[result.table["image"].to_numpy()]
    return result
