"""ImageFolder layouts: ImageNet with its shifted evaluation sets, and any folder of classes.

* ``imagenet``: ``root/train/<wnid>/...`` and ``root/val/<wnid>/...`` (default root
  ``$MRL_DATA_DIR/imagenet``), and the shifted evaluation sets as extra splits: ``v2``
  (``root/imagenet-v2/``, folders ``0``..``999`` = class index), ``a`` and ``r``
  (``root/imagenet-a/``, ``root/imagenet-r/``: 200 wnid folders each; labels stay
  1000-way, ``class_subset_indices`` lists the 200 classes to restrict logits to) and
  ``sketch`` (``root/imagenet-sketch/``, 1000 wnid folders). A set folder holding a single
  subfolder (as the archives unpack) is descended into, and ``root=`` may also point at
  the set folder itself. The default superclasses are the MRL paper's 30 WordNet
  superclasses plus ``"other"`` (its 31-way setup).
* ``folder``: any ``ImageFolder`` tree at ``root`` (``root/<split>/`` if that exists);
  option ``image_size`` (default 224).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2

from mrl_analysis.core.checks import check_int
from mrl_analysis.data import wordnet
from mrl_analysis.data.bundle import Parts, Selector, data_dir
from mrl_analysis.data.fingerprint import listing_digest
from mrl_analysis.data.hierarchy import wordnet_hierarchy
from mrl_analysis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_transforms

FOLDER_SPLITS = ("train", "val", "test")
IMAGE_SIZE = 224
IMAGENET_SHIFTED = {
    "v2": "imagenet-v2",
    "a": "imagenet-a",
    "r": "imagenet-r",
    "sketch": "imagenet-sketch",
}
IMAGENET_SPLITS = ("train", "val", *IMAGENET_SHIFTED)
_WNID = re.compile(r"n\d{8}")


def transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """``(evaluation, training)`` transforms: resize to ``size * 256 / 224``, centre crop."""
    return image_transforms(size, IMAGENET_MEAN, IMAGENET_STD, round(size * 256 / 224), (0.08, 1.0))


def _scan(
    root: Path, folder: Path, class_to_idx: Mapping[str, int]
) -> tuple[list[str], np.ndarray]:
    """Image files under ``folder/<class>/`` as paths relative to ``root``, and labels.

    A class folder that exists but holds no image is an error: kept, it would be a class
    with 0 samples (per-class metrics of nothing); dropped, it would shift the labels of
    every later class against a split where it is not empty.
    """
    samples = make_dataset(
        str(folder), dict(class_to_idx), extensions=IMG_EXTENSIONS, allow_empty=True
    )
    targets = np.fromiter((t for _, t in samples), dtype=np.int64, count=len(samples))
    found = set(np.unique(targets).tolist())
    empty = sorted(c for c, i in class_to_idx.items() if i not in found and (folder / c).is_dir())
    if empty:
        shown = ", ".join(empty[:5]) + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
        raise ValueError(
            f"{len(empty)} class folder(s) under {folder} hold no image files "
            f"({', '.join(IMG_EXTENSIONS)}): {shown}. Add their images, remove the empty "
            "folders, or leave those classes out with classes=[...]"
        )
    cut = len(str(root)) + 1
    return [p[cut:] for p, _ in samples], targets


def _class_folder(folder: Path, looks_like_class: Callable[[str], bool]) -> Path:
    """``folder``, or its only subfolder when the class folders sit one level deeper."""
    subdirs = [d for d in folder.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and not looks_like_class(subdirs[0].name):
        return subdirs[0]
    return folder


def imagenet_parts(split: str, root: Path | None, select: Selector) -> Parts:
    """Read ImageNet split ``split`` (``train``, ``val`` or a shifted set)."""
    base = root if root is not None else data_dir() / "imagenet"
    classes = wordnet.imagenet1k_classes()
    ids = [w for w, _ in classes]
    names = [n.replace("_", " ") for _, n in classes]
    keep = select(ids, names)
    subset = None
    if split in ("train", "val"):
        folder = base / split
        looks_like_class: Callable[[str], bool] = _WNID.fullmatch
    else:
        folder = base / IMAGENET_SHIFTED[split]
        if not folder.is_dir() and root is not None:
            folder, base = root, root
        looks_like_class = str.isdigit if split == "v2" else _WNID.fullmatch
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no ImageNet {split} folder at {folder}. Fix: pass root= the ImageNet folder "
            f"(holding train/, val/, {', '.join(IMAGENET_SHIFTED.values())}/) or set "
            "MRL_DATA_DIR to the parent of imagenet/; for shifted sets root= may also be the "
            "set's own folder."
        )
    folder = _class_folder(folder, looks_like_class)
    if split == "v2":
        class_to_idx = {str(i): int(i) for i in keep}
    else:
        class_to_idx = {ids[i]: int(i) for i in keep}
        if split in ("a", "r"):
            present = {d.name for d in folder.iterdir() if d.is_dir()}
            subset = np.asarray([i for i, w in enumerate(ids) if w in present], dtype=np.int64)
    files, targets = _scan(base, folder, class_to_idx)
    if not files:
        raise FileNotFoundError(
            f"no images of the selected classes under {folder} (expected "
            f"{'0..999' if split == 'v2' else '<wnid>'}/ class folders of image files)"
        )
    return Parts(
        class_ids=ids,
        class_names=names,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=listing_digest(base, files),
        in_channels=3,
        image_size=IMAGE_SIZE,
        root=base,
        hierarchy=wordnet_hierarchy(ids, wordnet.PAPER_SUPERCLASSES),
        class_subset=subset,
    )


def folder_parts(
    split: str, root: Path | None, select: Selector, image_size: int = IMAGE_SIZE
) -> Parts:
    """Read the ``<class>/<image>`` tree at ``root`` (or ``root/<split>``)."""
    if root is None:
        raise ValueError("the folder dataset needs root= (a folder of <class>/<image> files)")
    image_size = check_int(image_size, "image_size", low=1)
    folder = root / split if (root / split).is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    ids = sorted(d.name for d in os.scandir(folder) if d.is_dir())
    if not ids:
        raise FileNotFoundError(f"no class folders in {folder}: expected <class>/<image> files")
    keep = select(ids, ids)
    files, targets = _scan(root, folder, {ids[i]: int(i) for i in keep})
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    return Parts(
        class_ids=ids,
        class_names=ids,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=listing_digest(root, files),
        in_channels=3,
        image_size=image_size,
        root=root,
    )
