"""An experiment: named checkpoints × one dataset's splits → embedding caches.

Notebooks and the demo start here: ``build_caches`` loads each checkpoint once and each
split once, and asks the cache layer for every (model, split) pair. A cache that is
already up to date is reused at once; a stale one (changed checkpoint, data or
transform) is recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.cache.store import cache_path
from mrl_analysis.data.datasets import DatasetBundle, get_dataset
from mrl_analysis.models.checkpoints import load_model
from mrl_analysis.models.network import MatryoshkaModel

#: Split-name suffix of the horizontally flipped (test-time augmentation) caches.
HFLIP_SUFFIX = "hflip"

#: ``cache_name(display_name, model, bundles)``: the cache folder of a loaded model, given
#: the bundles of the splits it will embed; it may raise to reject an unsuitable model.
CacheName = Callable[[str, MatryoshkaModel, Mapping[str, DatasetBundle]], str]

_TRAIN_HINT = (
    "train them first (`make demo` for the Fashion-MNIST defaults, or `mrl-analysis train ...`)"
)


def require_checkpoints(models: Mapping[str, str | os.PathLike], hint: str = _TRAIN_HINT) -> None:
    """Raise ``FileNotFoundError`` naming every checkpoint of ``models`` that does not exist."""
    missing = {name: str(p) for name, p in models.items() if not Path(p).exists()}
    if missing:
        raise FileNotFoundError(f"checkpoints not found: {missing}; {hint}")


def build_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
    hflip: bool = False,
    cache_name: CacheName | None = None,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{model_name: {split: EmbeddingCache}}`` for every named checkpoint.

    ``models`` maps a display name (``"MRL"``, ``"FF-512"``, ...) to a checkpoint path;
    caches live at ``cache_path(cache_root, cache_name(...) or name, dataset, split)``.

    With ``hflip=True`` each split's evaluation transform is followed by a deterministic
    horizontal flip (flip test-time augmentation); those caches are stored and returned
    under the split name ``"<split>-hflip"``, and the flip is part of the transform's
    ``repr``, hence of the cache key.
    """
    require_checkpoints(models)
    bundles = {split: _bundle(dataset, split, data_root, hflip) for split in splits}
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        folder = name if cache_name is None else cache_name(name, model, bundles)
        caches[name] = {}
        for split, bundle in bundles.items():
            key = f"{split}-{HFLIP_SUFFIX}" if hflip else split
            caches[name][key] = embed_dataset(
                model,
                bundle,
                cache_path(cache_root, folder, dataset, key),
                batch_size=batch_size,
                model_id=folder,
                progress=progress,
            )
    return caches


def build_flipped_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    **kwargs,
) -> dict[str, dict[str, EmbeddingCache]]:
    """:func:`build_caches` with ``hflip=True``: caches under ``"<split>-hflip"``."""
    return build_caches(models, dataset, splits, hflip=True, **kwargs)


def _bundle(
    dataset: str, split: str, data_root: str | os.PathLike | None, hflip: bool
) -> DatasetBundle:
    plain = get_dataset(dataset, split, root=data_root)
    if not hflip:
        return plain
    from torchvision.transforms import v2

    # p=1 makes the "random" flip unconditional: every sample is flipped, every run.
    flip = v2.Compose([plain.transform, v2.RandomHorizontalFlip(p=1.0)])
    return get_dataset(dataset, split, root=data_root, transform=flip)
