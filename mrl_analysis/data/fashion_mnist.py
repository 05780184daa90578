"""Fashion-MNIST (splits ``train`` / ``test``): the four standard idx files.

They are looked up (``.gz`` or not) in ``root`` (or ``$MRL_DATA_DIR``), its
``fashion-mnist/`` and ``FashionMNIST/raw/`` subfolders, then
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), then
``data/``; without ``root=`` torchvision downloads them into ``$MRL_DATA_DIR`` (or
``data/``) as a last resort. The images are held in memory as a uint8 tensor, so transforms
run on tensors. Fashion-MNIST has no hierarchy of its own:
:data:`FASHION_MNIST_SUPERCLASSES` groups the garments by what they are worn on.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

from mrl_analysis.data.bundle import Parts, Selector, data_dir
from mrl_analysis.data.fingerprint import file_digest
from mrl_analysis.data.transforms import tensor_transforms

SPLITS = ("train", "test")
IMAGE_SIZE = 28
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Grouped by what the garment is worn on; Fashion-MNIST itself has no hierarchy.
FASHION_MNIST_SUPERCLASSES = {
    "T-shirt/top": "tops",
    "Pullover": "tops",
    "Coat": "tops",
    "Shirt": "tops",
    "Trouser": "bottoms",
    "Dress": "dresses",
    "Sandal": "footwear",
    "Sneaker": "footwear",
    "Ankle boot": "footwear",
    "Bag": "bags",
}
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """``(evaluation, training)`` transforms for ``size`` px images."""
    return tensor_transforms(size, 2, FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file; re-download it")
    ndim = raw[3]
    shape = tuple(int(x) for x in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape)) + 4 + 4 * ndim
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated ({len(raw)} of {expected} bytes); re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_files(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = folder / f"{prefix}-{kind}"
        path = next((p for p in (stem.with_name(stem.name + ".gz"), stem) if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def parts(split: str, root: Path | None, select: Selector, download: bool | None = None) -> Parts:
    """Read split ``split``; ``download`` (default: when no ``root`` is given) lets
    torchvision fetch missing files."""
    prefix = "train" if split == "train" else "t10k"

    def folders(base: Path) -> list[Path]:
        return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]

    env = os.environ.get("MRL_DATA_DIR")
    if root is not None:
        candidates = folders(root)
    else:
        candidates = [
            *(folders(Path(env)) if env else []),
            FASHION_MNIST_SYSTEM_DIR,
            *([] if env else folders(Path("data"))),
        ]
    files = next((f for d in candidates if (f := _idx_files(d, prefix))), None)
    failure = ""
    if files is None and (download if download is not None else root is None):
        target = root if root is not None else data_dir()
        try:
            FashionMNIST(str(target), train=split == "train", download=True)
            files = _idx_files(target / "FashionMNIST" / "raw", prefix)
        except (OSError, RuntimeError) as err:
            failure = f" torchvision's download into {target} failed too: {err}."
    if files is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], "
            f"{prefix}-labels-idx1-ubyte[.gz]) not found in: "
            f"{', '.join(map(str, candidates))}.{failure} Fix: "
            "`apt-get install dataset-fashion-mnist`, or put the files in $MRL_DATA_DIR "
            "(or pass root=), or let torchvision download them (omit root=, or pass "
            "download=True)."
        )
    images, labels = (_read_idx(p) for p in files)
    if len(images) != len(labels):
        raise ValueError(f"{files[0]} has {len(images)} images but {files[1]} {len(labels)} labels")
    ids = list(FASHION_MNIST_CLASSES)
    return Parts(
        class_ids=ids,
        class_names=ids,
        keep=select(ids, ids),
        targets=labels.astype(np.int64),
        sample_ids=[f"{split}/{i}" for i in range(len(labels))],
        digest=file_digest(files),
        in_channels=1,
        image_size=IMAGE_SIZE,
        root=files[0].parent,
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        hierarchy=dict(FASHION_MNIST_SUPERCLASSES),
    )
