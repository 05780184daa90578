"""An experiment: named checkpoints × one dataset's splits → embedding caches.

Notebooks and the demo start here: ``build_caches`` loads each checkpoint once and each
split once, and makes one pass over each split for all the models
(:func:`~mrl_analysis.cache.build.embed_many`): every image is read and transformed once,
and its horizontally flipped copy (``hflip_splits``) comes from the same batch. A cache
that is already up to date is reused at once; a stale one (changed checkpoint, data or
transform) is recomputed. ``build_subset_caches`` does the same for models trained on a
class subset, over *every* class of the splits (the novel-class analyses need the
classes such a model never saw). Under ``torchrun`` the passes are shared among the
processes (:mod:`mrl_analysis.cache.build`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mrl_analysis.cache.build import EmbedTarget, embed_many
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.cache.store import cache_path
from mrl_analysis.data.bundle import DatasetBundle
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_checkpoint, load_model
from mrl_analysis.models.network import MatryoshkaModel

#: Split-name suffix of the horizontally flipped (test-time augmentation) caches.
HFLIP_SUFFIX = "hflip"

#: ``plan(display_name, model, bundle)``: the cache folder of a loaded model for a split and,
#: for a model trained on a class subset, the bundle label of each of its outputs (else
#: None); it may raise to reject an unsuitable model.
CachePlan = Callable[[str, MatryoshkaModel, DatasetBundle], tuple[str, list[int] | None]]

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
    num_workers: int = 0,
    progress: bool = True,
    hflip_splits: Sequence[str] = (),
    device: str | torch.device | None = None,
    distributed: bool | None = None,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{model_name: {split: EmbeddingCache}}`` for every named checkpoint.

    ``models`` maps a display name (``"MRL"``, ``"FF-512"``, ...) to a checkpoint path;
    caches live at ``cache_path(cache_root, name, dataset, split)``. Each split is read
    once for all the models.

    ``hflip_splits`` also caches those splits with every image flipped horizontally (flip
    test-time augmentation), under the split name ``"<split>-hflip"``, from the same pass
    over the data; the flip is part of the transform's ``repr``, hence of the cache key.
    A split only in ``hflip_splits`` gets its flipped caches alone.

    ``device`` (default: the CPU the checkpoints load on; ``"auto"``: this process's GPU
    when there is one), ``num_workers`` (DataLoader processes decoding images, per
    process) and ``distributed`` (default: when started by torchrun) are as in
    :func:`~mrl_analysis.cache.build.embed_dataset`.
    """
    require_checkpoints(models)
    return _build(
        models,
        dataset,
        splits,
        lambda name, model, bundle: (name, None),
        cache_root=cache_root,
        data_root=data_root,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        hflip_splits=hflip_splits,
        device=device,
        distributed=distributed,
    )


def build_subset_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
    distributed: bool | None = None,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{name: {split: EmbeddingCache}}`` of class-subset models over all classes.

    Like :func:`build_caches`, but for models trained on some of the dataset's classes
    (``TrainConfig.classes``): each split is embedded with *all* its classes, so labels
    index the dataset's classes (``cache.class_ids``) while the logits have one column per
    class the model was trained on; the manifest's ``logit_classes`` gives each column's
    label. Caches live under :func:`subset_cache_name`.
    """
    require_checkpoints(
        models,
        "train them first (`make demo` trains the Fashion-MNIST class-subset models, or "
        "`mrl-analysis train` with classes=...)",
    )

    def plan(name: str, model: MatryoshkaModel, bundle: DatasetBundle) -> tuple[str, list[int]]:
        classes = _recorded_classes(model.meta, model.class_names, models[name])
        trained_on = model.meta.get("dataset")
        if trained_on is not None and trained_on != dataset:
            raise ValueError(f"{name} was trained on {trained_on!r}, not on {dataset!r}")
        # Every trained class must exist in the split; output j is trained class j.
        return subset_cache_name(name, classes), class_labels(bundle.class_ids, classes).tolist()

    return _build(
        models,
        dataset,
        splits,
        plan,
        cache_root=cache_root,
        data_root=data_root,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        device=device,
        distributed=distributed,
    )


def _build(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    plan: CachePlan,
    *,
    cache_root: str | os.PathLike,
    data_root: str | os.PathLike | None,
    batch_size: int,
    num_workers: int,
    progress: bool,
    hflip_splits: Sequence[str] = (),
    device: str | torch.device | None,
    distributed: bool | None,
) -> dict[str, dict[str, EmbeddingCache]]:
    passes = list(dict.fromkeys([*splits, *hflip_splits]))
    bundles = {split: get_dataset(dataset, split, root=data_root) for split in passes}
    flipped = {split: _flipped(bundles[split], dataset, data_root) for split in hflip_splits}
    loaded = {name: load_model(checkpoint) for name, checkpoint in models.items()}
    # Planned for every model and split first, so that an unsuitable model fails before
    # any work.
    plans = {
        name: {split: plan(name, model, bundle) for split, bundle in bundles.items()}
        for name, model in loaded.items()
    }
    caches: dict[str, dict[str, EmbeddingCache]] = {name: {} for name in models}
    for split in passes:
        targets: list[EmbedTarget] = []
        names: list[tuple[str, str]] = []
        for name, model in loaded.items():
            folder, logit_classes = plans[name][split]
            views = [(split, None, None)] if split in splits else []
            if split in flipped:
                views.append((f"{split}-{HFLIP_SUFFIX}", flipped[split], _hflip))
            for key, bundle, view in views:
                where = cache_path(cache_root, folder, dataset, key)
                targets.append(EmbedTarget(model, where, folder, logit_classes, bundle, view))
                names.append((name, key))
        built = embed_many(
            bundles[split],
            targets,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            device=device,
            distributed=distributed,
        )
        for (name, key), cache in zip(names, built, strict=True):
            caches[name][key] = cache
    return caches


def build_flipped_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    **kwargs,
) -> dict[str, dict[str, EmbeddingCache]]:
    """The flipped caches alone (:func:`build_caches` with ``hflip_splits=splits``): caches
    under ``"<split>-hflip"``."""
    return build_caches(models, dataset, [], hflip_splits=splits, **kwargs)


def _hflip(images: torch.Tensor) -> torch.Tensor:
    """A batch ``[..., H, W]`` flipped left to right: what the flipped bundle's transform
    does to each image, applied to the batch the plain pass loaded."""
    return images.flip(-1)


def _flipped(
    plain: DatasetBundle, dataset: str, data_root: str | os.PathLike | None
) -> DatasetBundle:
    """``plain`` with its evaluation transform followed by a horizontal flip."""
    from torchvision.transforms import v2

    # p=1 makes the "random" flip unconditional: every sample is flipped, every run.
    flip = v2.Compose([plain.transform, v2.RandomHorizontalFlip(p=1.0)])
    if not hasattr(plain.dataset, "transform"):
        return get_dataset(dataset, plain.split, root=data_root, transform=flip)
    # The same samples through the flipped transform: no second scan of the data files.
    images = copy.copy(plain.dataset)
    images.transform = flip
    return dataclasses.replace(plain, dataset=images, transform=flip)


# --------------------------------------------------------------------------- class subsets


def class_labels(class_ids: Sequence[str], chosen: Sequence[str]) -> np.ndarray:
    """Labels (positions in ``class_ids``) of the class ids ``chosen``, in their order."""
    index = {str(c): i for i, c in enumerate(class_ids)}
    unknown = [str(c) for c in chosen if str(c) not in index]
    if unknown:
        raise ValueError(
            f"classes {unknown[:10]} are not among the dataset's class ids "
            f"{list(index)[:10]}{' ...' if len(index) > 10 else ''}; pass ids of this dataset"
        )
    return np.array([index[str(c)] for c in chosen], dtype=np.int64)


def trained_classes(checkpoint: str | os.PathLike) -> list[str]:
    """The class ids a checkpoint of ours was trained on (its ``meta["classes"]``)."""
    raw = load_checkpoint(checkpoint)
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    return _recorded_classes(meta, raw.get("class_names"), checkpoint)


def _recorded_classes(
    meta: Mapping, class_names: Sequence[str] | None, source: object
) -> list[str]:
    classes = meta.get("classes") or class_names
    if not classes:
        raise ValueError(
            f"{source} records no class list (meta['classes'] or class_names); the "
            "novel-class settings need a checkpoint trained with mrl_analysis.train"
        )
    return [str(c) for c in classes]


def subset_cache_name(name: str, classes: Sequence[str]) -> str:
    """Cache folder name of a model trained on ``classes``: ``<name>.subset-<k>-<hash>``.

    A class-subset model is usually shown under the same display name as its all-classes
    counterpart ("MRL"); its own folder keeps the two caches from replacing each other.
    """
    digest = hashlib.sha256("\n".join(sorted(map(str, classes))).encode()).hexdigest()
    return f"{name}.subset-{len(classes)}-{digest[:8]}"
