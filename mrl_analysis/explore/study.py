"""The explorer's inputs: a checkpoint's model, its eval split and embedding cache.

The only module of :mod:`mrl_analysis.explore` that finds, builds or opens caches and
datasets; the state is handed what it loads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import build_caches
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_model


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


def match_images(images: Any, sample_ids: Sequence[str]) -> tuple[Any, np.ndarray | None]:
    """``(dataset, positions)``: where each cached sample's image is in ``images``.

    ``images``: a ``DatasetBundle`` (matched by ``sample_ids``), a torch ``Dataset`` in the
    cache's sample order, or None (no images).
    """
    if images is None:
        return None, None
    if hasattr(images, "dataset") and hasattr(images, "sample_ids"):
        return images.dataset, sample_positions(images, sample_ids)
    if len(images) != len(sample_ids):
        raise ValueError(
            f"the dataset has {len(images)} samples and the cache {len(sample_ids)}: pass the "
            "DatasetBundle (matched by sample_ids) or a dataset in the cache's order"
        )
    return images, np.arange(len(sample_ids))
