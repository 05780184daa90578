"""CIFAR-100 (splits ``train`` / ``test``): torchvision's python release.

The files live in ``root/cifar-100-python/`` (default root ``$MRL_DATA_DIR`` or ``data/``);
torchvision downloads them there when ``root`` is not given or ``download=True``. The
superclasses are CIFAR's 20 coarse labels. Images are held in memory as a uint8 tensor.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR100
from torchvision.transforms import v2

from mrl_analysis.data.bundle import Parts, Selector, data_dir
from mrl_analysis.data.fingerprint import file_digest
from mrl_analysis.data.transforms import tensor_transforms

SPLITS = ("train", "test")
IMAGE_SIZE = 32
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """``(evaluation, training)`` transforms for ``size`` px images."""
    return tensor_transforms(size, 4, CIFAR100_MEAN, CIFAR100_STD)


def _unpickle(path: Path) -> dict:
    # The CIFAR python release is pickled dicts; torchvision reads it the same way.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def parts(split: str, root: Path | None, select: Selector, download: bool | None = None) -> Parts:
    """Read split ``split``; ``download`` (default: when no ``root`` is given) lets
    torchvision fetch missing files."""
    base = root if root is not None else data_dir()
    folder = base / "cifar-100-python"
    files = [folder / split, folder / "meta"]
    failure = ""
    missing = not all(f.is_file() for f in files)
    if missing and (download if download is not None else root is None):
        try:
            CIFAR100(str(base), train=split == "train", download=True)
        except (OSError, RuntimeError) as err:
            failure = f" torchvision's download into {base} failed: {err}."
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"CIFAR-100 files {files[0]} and {files[1]} not found.{failure} Fix: pass root= "
            "the folder holding cifar-100-python/, or download=True to let torchvision fetch "
            "it there."
        )
    entry, meta = _unpickle(files[0]), _unpickle(files[1])
    fine = np.asarray(entry["fine_labels"], dtype=np.int64)
    coarse = np.asarray(entry["coarse_labels"], dtype=np.int64)
    ids = list(meta["fine_label_names"])
    coarse_names = [n.replace("_", " ") for n in meta["coarse_label_names"]]
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    hierarchy = {ids[f]: coarse_names[c] for f, c in pairs}
    names = [n.replace("_", " ") for n in ids]
    images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return Parts(
        class_ids=ids,
        class_names=names,
        keep=select(ids, names),
        targets=fine,
        sample_ids=[f"{split}/{i}" for i in range(len(fine))],
        digest=file_digest(files),
        in_channels=3,
        image_size=IMAGE_SIZE,
        root=folder,
        images=torch.from_numpy(images.copy()),
        hierarchy=hierarchy,
    )
