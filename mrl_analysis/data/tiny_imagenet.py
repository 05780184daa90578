"""Tiny-ImageNet (splits ``train`` / ``val``) in its native layout.

``root`` (default ``$MRL_DATA_DIR/tiny-imagenet-200``) holds ``wnids.txt``, ``words.txt``,
``train/<wnid>/images/*.JPEG`` with ``train/<wnid>/<wnid>_boxes.txt``, and
``val/images/*.JPEG`` with ``val/val_annotations.txt``. Classes are the sorted wnids, names
the first synonym in ``words.txt``, boxes come from the box / annotation files, and the
default superclasses are the broad WordNet groups
:data:`~mrl_analysis.data.wordnet.COARSE_SUPERCLASSES`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from mrl_analysis.data import wordnet
from mrl_analysis.data.bundle import Parts, Selector, data_dir
from mrl_analysis.data.fingerprint import listing_digest
from mrl_analysis.data.hierarchy import wordnet_hierarchy
from mrl_analysis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_transforms

SPLITS = ("train", "val")
IMAGE_SIZE = 64
_BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


def transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """``(evaluation, training)`` transforms for ``size`` px images (no resize: 64 px)."""
    return image_transforms(size, IMAGENET_MEAN, IMAGENET_STD, None, (0.35, 1.0))


def _read_table(texts: Iterable[str], columns: list[str]) -> pd.DataFrame:
    """Whitespace-separated tables (Tiny-ImageNet box files), parsed in one pass."""
    return pd.read_csv(
        io.StringIO("".join(texts)), sep=r"\s+", header=None, names=columns, dtype={"file": str}
    )


def _first_synonyms(path: Path, wnids: Sequence[str]) -> list[str]:
    wanted, found = set(wnids), {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, words = line.partition("\t")
            if wnid in wanted:
                found[wnid] = words.split(",")[0].strip()
    return [found.get(w, w) for w in wnids]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def parts(split: str, root: Path | None, select: Selector) -> Parts:
    """Read split ``split`` of the selected classes (images, labels and boxes)."""
    root = root if root is not None else data_dir() / "tiny-imagenet-200"
    if not (root / "wnids.txt").is_file():
        raise FileNotFoundError(
            f"no Tiny-ImageNet at {root} (expected {root / 'wnids.txt'}). Fix: pass root= the "
            "tiny-imagenet-200 folder, or set MRL_DATA_DIR to its parent "
            "(download: http://cs231n.stanford.edu/tiny-imagenet-200.zip)."
        )
    ids = sorted((root / "wnids.txt").read_text().split())
    if (root / "words.txt").is_file():
        names = _first_synonyms(root / "words.txt", ids)
    else:
        wn = wordnet.load_wordnet()
        names = [wn.name(w) if w in wn else w for w in ids]
    keep = select(ids, names)
    index = {w: i for i, w in enumerate(ids)}
    if split == "train":
        files, labels, box_texts = [], [], []
        for i in keep:
            wnid = ids[i]
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise FileNotFoundError(f"Tiny-ImageNet class folder {folder} is missing")
            images = sorted(n for n in os.listdir(folder) if _is_image(n))
            if not images:
                # Kept, it would be a class of 0 samples that no split can score.
                raise ValueError(
                    f"Tiny-ImageNet class folder {folder} holds no image files: re-extract "
                    f"the dataset, or leave {wnid} out with classes=[...]"
                )
            files += [f"train/{wnid}/images/{n}" for n in images]
            labels.append(np.full(len(images), i, dtype=np.int64))
            box_file = root / "train" / wnid / f"{wnid}_boxes.txt"
            if box_file.is_file():
                box_texts.append(box_file.read_text().rstrip("\n") + "\n")
        targets = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        table = _read_table(box_texts, ["file", *_BOX_COLUMNS]).drop_duplicates("file")
        # Box files name images without their folder; the wnid prefix keeps names unique.
        by_file = table.set_index("file")[_BOX_COLUMNS]
        box_array = by_file.reindex([f.rpartition("/")[2] for f in files]).to_numpy(np.float32)
    else:
        annotations = (root / "val" / "val_annotations.txt").read_text()
        table = _read_table([annotations], ["file", "wnid", *_BOX_COLUMNS])
        present = set(os.listdir(root / "val" / "images"))
        table = table[table["file"].isin(present) & table["wnid"].isin([ids[i] for i in keep])]
        files = [f"val/images/{n}" for n in table["file"]]
        targets = table["wnid"].map(index).to_numpy(np.int64)
        box_array = table[_BOX_COLUMNS].to_numpy(np.float32)
    return Parts(
        class_ids=ids,
        class_names=names,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=listing_digest(root, files),
        in_channels=3,
        image_size=IMAGE_SIZE,
        root=root,
        boxes=box_array,
        hierarchy=wordnet_hierarchy(ids, wordnet.COARSE_SUPERCLASSES),
    )
