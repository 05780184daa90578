"""An experiment: named checkpoints × one dataset's splits → embedding caches.

Notebooks and the demo start here: ``build_caches`` loads each checkpoint once and each
split once, and asks the cache layer for every (model, split) pair. A cache that is
already up to date is reused at once; a stale one (changed checkpoint, data or
transform) is recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mrl_analysis.cache import EmbeddingCache, cache_path, embed_dataset
from mrl_analysis.checkpoints import load_model
from mrl_analysis.datasets import DatasetBundle, get_dataset


def build_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{model_name: {split: EmbeddingCache}}`` for every named checkpoint.

    ``models`` maps a display name (``"MRL"``, ``"FF-512"``, ...) to a checkpoint path;
    caches live at ``cache_path(cache_root, name, dataset, split)``.
    """
    missing = {name: str(p) for name, p in models.items() if not Path(p).exists()}
    if missing:
        raise FileNotFoundError(
            f"checkpoints not found: {missing}; train them first (`make demo` for the "
            "Fashion-MNIST defaults, or `mrl-analysis train ...`)"
        )
    bundles: dict[str, DatasetBundle] = {}
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        caches[name] = {}
        for split in splits:
            if split not in bundles:
                bundles[split] = get_dataset(dataset, split, root=data_root)
            caches[name][split] = embed_dataset(
                model,
                bundles[split],
                cache_path(cache_root, name, dataset, split),
                batch_size=batch_size,
                model_id=name,
                progress=progress,
            )
    return caches


#: Split-name suffix of the horizontally flipped (test-time augmentation) caches.
HFLIP_SUFFIX = "hflip"


def build_flipped_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches of horizontally flipped inputs, for flip test-time augmentation (TTA).

    Like :func:`build_caches`, but each split's evaluation transform is followed by a
    deterministic horizontal flip, and the caches are stored under the split name
    ``"<split>-hflip"`` (returned under that name too). The flip is part of the
    transform's ``repr``, hence of the cache key.
    """
    from torchvision.transforms import v2

    missing = {name: str(p) for name, p in models.items() if not Path(p).exists()}
    if missing:
        raise FileNotFoundError(
            f"checkpoints not found: {missing}; train them first (`make demo` for the "
            "Fashion-MNIST defaults, or `mrl-analysis train ...`)"
        )
    bundles: dict[str, DatasetBundle] = {}
    for split in splits:
        plain = get_dataset(dataset, split, root=data_root)
        # p=1 makes the "random" flip unconditional: every sample is flipped, every run.
        flip = v2.Compose([plain.transform, v2.RandomHorizontalFlip(p=1.0)])
        bundles[split] = get_dataset(dataset, split, root=data_root, transform=flip)
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        caches[name] = {}
        for split, bundle in bundles.items():
            flipped = f"{split}-{HFLIP_SUFFIX}"
            caches[name][flipped] = embed_dataset(
                model,
                bundle,
                cache_path(cache_root, name, dataset, flipped),
                batch_size=batch_size,
                model_id=name,
                progress=progress,
            )
    return caches
