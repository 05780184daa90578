"""Datasets by name: ``get_dataset(name, split, ...) -> DatasetBundle``.

Every dataset comes back as a :class:`~mrl_analysis.data.bundle.DatasetBundle` (see
``docs/architecture.md``): a torch ``Dataset`` yielding ``(image tensor [C, H, W], label)``
plus the labels, class ids/names, a superclass ``hierarchy``, stable ``sample_ids``, boxes
when the data has them, the transform and a ``fingerprint`` of the data.

Registered names (``list_datasets()``); each source module documents its layout on disk:

* ``fashion-mnist`` (``train`` / ``test``): :mod:`mrl_analysis.data.fashion_mnist`;
* ``cifar100`` (``train`` / ``test``): :mod:`mrl_analysis.data.cifar100`;
* ``tiny-imagenet`` (``train`` / ``val``): :mod:`mrl_analysis.data.tiny_imagenet`;
* ``imagenet`` (``train`` / ``val`` and the shifted sets ``v2``, ``a``, ``r``, ``sketch``)
  and ``folder`` (any ``ImageFolder`` tree): :mod:`mrl_analysis.data.image_folders`.

Default superclass hierarchies: Fashion-MNIST groups garments by what they are worn on,
CIFAR-100 uses its coarse labels, ImageNet the MRL paper's 30 WordNet superclasses plus
``"other"`` (its 31-way setup), Tiny-ImageNet the broad
:data:`~mrl_analysis.data.wordnet.COARSE_SUPERCLASSES`. ``hierarchy=`` (a JSON file or a dict
``class id or name -> superclass``) replaces it for any dataset.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mrl_analysis.core.checks import check_int
from mrl_analysis.data import cifar100, fashion_mnist, image_folders, tiny_imagenet
from mrl_analysis.data.bundle import (
    DatasetBundle,
    ImageFileDataset,
    Parts,
    TensorImageDataset,
)
from mrl_analysis.data.hierarchy import hierarchy_by_id

#: ``transforms(image_size) -> (evaluation, training)``.
Transforms = Callable[[int], tuple[Callable, Callable]]


@dataclass(frozen=True)
class _Entry:
    splits: tuple[str, ...]
    build: Callable[..., Parts]  # (split, root, select, **options) -> Parts
    transforms: Transforms
    image_size: int


_REGISTRY: dict[str, _Entry] = {
    "fashion-mnist": _Entry(
        fashion_mnist.SPLITS,
        fashion_mnist.parts,
        fashion_mnist.transforms,
        fashion_mnist.IMAGE_SIZE,
    ),
    "cifar100": _Entry(cifar100.SPLITS, cifar100.parts, cifar100.transforms, cifar100.IMAGE_SIZE),
    "tiny-imagenet": _Entry(
        tiny_imagenet.SPLITS,
        tiny_imagenet.parts,
        tiny_imagenet.transforms,
        tiny_imagenet.IMAGE_SIZE,
    ),
    "imagenet": _Entry(
        image_folders.IMAGENET_SPLITS,
        image_folders.imagenet_parts,
        image_folders.transforms,
        image_folders.IMAGE_SIZE,
    ),
    "folder": _Entry(
        image_folders.FOLDER_SPLITS,
        image_folders.folder_parts,
        image_folders.transforms,
        image_folders.IMAGE_SIZE,
    ),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return sorted(_REGISTRY)


def get_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    classes: Sequence[str | int] | None = None,
    augment: bool = False,
    transform: Callable | None = None,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load split ``split`` of dataset ``name`` (layouts: see the module docstring).

    ``classes``: class ids, names or indices to keep; labels become ``0..k-1`` in the given
    order. ``augment``: the training augmentation instead of the evaluation transform;
    ``transform`` replaces both. ``hierarchy``: a JSON file or dict mapping every kept
    class (id or name) to a superclass. ``options``: dataset-specific keywords
    (``download`` for fashion-mnist/cifar100, ``image_size`` for folder).
    """
    entry = _entry(name)
    if split not in entry.splits:
        raise ValueError(f"{name} has no split {split!r}: choose one of {', '.join(entry.splits)}")
    accepted = [
        p for p in inspect.signature(entry.build).parameters if p not in ("split", "root", "select")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    if not isinstance(augment, bool):
        raise TypeError(f"augment must be True or False, got {augment!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable (image -> tensor), got {transform!r}")
    if transform is not None and augment:
        raise ValueError("pass either augment=True or transform=..., not both")
    if options.get("download") not in (None, True, False):
        raise TypeError(f"download must be True, False or None, got {options['download']!r}")

    def select(ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
        return _resolve_classes(classes, ids, names)

    if root is not None and not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a folder path, got {root!r} ({type(root).__name__})")
    root = None if root is None else Path(root)
    parts = entry.build(split=split, root=root, select=select, **options)
    if transform is None:
        transform = entry.transforms(parts.image_size)[1 if augment else 0]
    return _assemble(name, split, parts, transform, hierarchy)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
    return _REGISTRY[name]


def get_eval_transform(name: str, image_size: int | None = None) -> Callable:
    """The evaluation transform ``get_dataset(name)`` applies, without reading any data.

    This is what a model trained on ``name`` expects at inference. ``image_size`` only
    matters for ``folder`` (default 224).
    """
    entry = _entry(name)
    size = entry.image_size if image_size is None else check_int(image_size, "image_size", low=1)
    return entry.transforms(size)[0]


def _assemble(
    name: str,
    split: str,
    parts: Parts,
    transform: Callable,
    hierarchy: str | os.PathLike | Mapping[str, str] | None,
) -> DatasetBundle:
    lut = np.full(len(parts.class_ids), -1, dtype=np.int64)
    lut[parts.keep] = np.arange(len(parts.keep))
    relabelled = lut[parts.targets]
    index = np.flatnonzero(relabelled >= 0)
    targets = relabelled[index]
    everything = len(index) == len(parts.targets)
    sample_ids = parts.sample_ids if everything else [parts.sample_ids[i] for i in index]
    boxes = None if parts.boxes is None else parts.boxes[index]
    class_ids = [parts.class_ids[i] for i in parts.keep]
    class_names = [parts.class_names[i] for i in parts.keep]
    if parts.images is not None:
        images = parts.images if everything else parts.images[torch.from_numpy(index)]
        dataset: Dataset = TensorImageDataset(images, targets, transform)
    else:
        dataset = ImageFileDataset(parts.root, sample_ids, targets, transform)
    if hierarchy is not None:
        tree: dict[str, str] | None = _user_hierarchy(hierarchy, class_ids, class_names)
    elif parts.hierarchy is not None and all(c in parts.hierarchy for c in class_ids):
        tree = {c: parts.hierarchy[c] for c in class_ids}
    else:
        tree = None
    subset = None
    if parts.class_subset is not None:
        subset = np.sort(lut[parts.class_subset][lut[parts.class_subset] >= 0])
    digest = hashlib.sha256(
        json.dumps(
            {"dataset": name, "split": split, "data": parts.digest, "classes": class_ids}
        ).encode()
    )
    digest.update(targets.tobytes())
    if boxes is not None:
        digest.update(np.ascontiguousarray(boxes).tobytes())
    return DatasetBundle(
        name=name,
        split=split,
        dataset=dataset,
        targets=targets,
        class_names=class_names,
        class_ids=class_ids,
        hierarchy=tree,
        sample_ids=sample_ids,
        boxes=boxes,
        transform=transform,
        fingerprint=digest.hexdigest()[:16],
        in_channels=parts.in_channels,
        image_size=parts.image_size,
        root=parts.root,
        class_subset_indices=subset,
    )


# -- classes and hierarchies --------------------------------------------------------------


def _resolve_classes(
    classes: Sequence[str | int] | str | int | None, ids: Sequence[str], names: Sequence[str]
) -> np.ndarray:
    if classes is None:
        return np.arange(len(ids))
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    by_id = {c: i for i, c in enumerate(ids)}
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_name.setdefault(n, []).append(i)
    keep: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= c < len(ids):
                raise ValueError(f"class index {c} out of range: this split has {len(ids)} classes")
            keep.append(int(c))
        elif c in by_id:
            keep.append(by_id[c])
        elif len(by_name.get(c, [])) == 1:
            keep.append(by_name[c][0])
        elif c in by_name:
            raise ValueError(
                f"class name {c!r} is ambiguous: it names {[ids[i] for i in by_name[c]]}; "
                "select by class id instead"
            )
        else:
            close = difflib.get_close_matches(str(c), [*by_id, *by_name], n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"unknown class {c!r}: not a class id, name or index{hint}")
    if len(set(keep)) != len(keep):
        raise ValueError(f"classes= names some class twice: {list(classes)}")
    if not keep:
        raise ValueError("classes= is empty: give at least one class id, name or index")
    return np.asarray(keep, dtype=np.int64)


def _user_hierarchy(
    hierarchy: str | os.PathLike | Mapping[str, str],
    class_ids: Sequence[str],
    class_names: Sequence[str],
) -> dict[str, str]:
    """``hierarchy=`` of :func:`get_dataset`: it must map every kept class."""
    tree = hierarchy_by_id(hierarchy, class_ids, class_names)
    missing = [c for c in class_ids if c not in tree]
    if missing:
        source = "the hierarchy mapping" if isinstance(hierarchy, Mapping) else str(hierarchy)
        raise ValueError(
            f"{source} gives no superclass for {len(missing)} classes, e.g. {missing[:5]}; "
            "map every class (by id or name) to a superclass"
        )
    return tree


def split_classes(
    class_ids: Sequence[str], n_pretrain: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split classes at random into ``n_pretrain`` pretraining and the remaining novel ones.

    Seeded and deterministic; each part keeps the order of ``class_ids``.
    """
    ids = list(class_ids)
    n_pretrain, seed = check_int(n_pretrain, "n_pretrain"), check_int(seed, "seed", low=0)
    if not 0 < n_pretrain < len(ids):
        raise ValueError(f"n_pretrain must be in 1..{len(ids) - 1}, got {n_pretrain}")
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[np.random.default_rng(seed).permutation(len(ids))[:n_pretrain]] = True
    pretrain = [c for c, k in zip(ids, chosen, strict=True) if k]
    novel = [c for c, k in zip(ids, chosen, strict=True) if not k]
    return pretrain, novel
