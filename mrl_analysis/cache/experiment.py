"""An experiment: named checkpoints × one dataset's splits → embedding caches.

Notebooks and the demo start here: ``build_caches`` loads each checkpoint once and each
split once, and asks the cache layer for every (model, split) pair. A cache that is
already up to date is reused at once; a stale one (changed checkpoint, data or
transform) is recomputed. ``build_subset_caches`` does the same for models trained on a
class subset, over *every* class of the splits (the novel-class analyses need the
classes such a model never saw).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mrl_analysis.cache.build import embed_dataset
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
    progress: bool = True,
    hflip: bool = False,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{model_name: {split: EmbeddingCache}}`` for every named checkpoint.

    ``models`` maps a display name (``"MRL"``, ``"FF-512"``, ...) to a checkpoint path;
    caches live at ``cache_path(cache_root, name, dataset, split)``.

    With ``hflip=True`` each split's evaluation transform is followed by a deterministic
    horizontal flip (flip test-time augmentation); those caches are stored and returned
    under the split name ``"<split>-hflip"``, and the flip is part of the transform's
    ``repr``, hence of the cache key.
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
        progress=progress,
        hflip=hflip,
    )


def build_subset_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
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
        progress=progress,
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
    progress: bool,
    hflip: bool = False,
) -> dict[str, dict[str, EmbeddingCache]]:
    bundles = {split: _bundle(dataset, split, data_root, hflip) for split in splits}
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    for name, checkpoint in models.items():
        model = load_model(checkpoint)
        # Planned for every split first, so that an unsuitable model fails before any work.
        plans = {split: plan(name, model, bundle) for split, bundle in bundles.items()}
        caches[name] = {}
        for split, bundle in bundles.items():
            folder, logit_classes = plans[split]
            key = f"{split}-{HFLIP_SUFFIX}" if hflip else split
            caches[name][key] = embed_dataset(
                model,
                bundle,
                cache_path(cache_root, folder, dataset, key),
                batch_size=batch_size,
                model_id=folder,
                progress=progress,
                logit_classes=logit_classes,
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
