"""What every dataset comes back as: a :class:`DatasetBundle`, and what a source finds.

A *source* (one module per dataset family: :mod:`~mrl_analysis.data.fashion_mnist`,
:mod:`~mrl_analysis.data.cifar100`, :mod:`~mrl_analysis.data.tiny_imagenet`,
:mod:`~mrl_analysis.data.image_folders`) reads the files of one split and returns
:class:`Parts`, labelled over its full class list; the registry
(:mod:`~mrl_analysis.data.registry`) turns them into a bundle for the selected classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

#: ``select(class_ids, class_names)``: the indices of the requested classes, in order.
Selector = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def data_dir() -> Path:
    """``$MRL_DATA_DIR`` if set, else ``data/`` under the working directory."""
    return Path(os.environ.get("MRL_DATA_DIR") or "data")


@dataclass
class DatasetBundle:
    """A dataset split with everything analyses need to know about it.

    ``targets[i]`` is the label of ``dataset[i]`` and ``sample_ids[i]`` its stable id
    (path relative to ``root``, or ``"split/index"`` for in-memory data). ``boxes`` are
    ``(x0, y0, x1, y1)`` in original pixels, NaN where an image has none.
    ``class_subset_indices`` (ImageNet-A/R) lists the labels the split can contain.
    """

    name: str
    split: str
    dataset: Dataset
    targets: np.ndarray
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    sample_ids: list[str]
    boxes: np.ndarray | None
    transform: Callable | None
    fingerprint: str
    in_channels: int
    image_size: int
    root: Path | None = None
    class_subset_indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


@dataclass
class Parts:
    """What a source found, labelled over its full class list (before ``classes=``)."""

    class_ids: list[str]
    class_names: list[str]
    keep: np.ndarray  # indices of the selected classes, in the requested order
    targets: np.ndarray  # full-list labels; samples of unselected classes may be present
    sample_ids: list[str]
    digest: str
    in_channels: int
    image_size: int
    root: Path | None
    images: torch.Tensor | None = None  # in-memory data; else files under root
    boxes: np.ndarray | None = None
    hierarchy: dict[str, str] | None = None
    class_subset: np.ndarray | None = None


class UnreadableImageError(ValueError):
    """An image file PIL cannot decode (truncated, corrupt or not an image)."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an 8-bit RGB PIL image; a decoding failure names the file.

    16-bit greyscale (PNG, TIFF: modes ``I;16*`` and ``I``) is scaled from 0..65535 to
    0..255; PIL's own ``convert("RGB")`` clips it at 255, which turns such images white.
    """
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16") or img.mode == "I":
                wide = np.asarray(img, dtype=np.float32)
                grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
                return Image.fromarray(grey).convert("RGB")
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"cannot read image {path}: {err}. Remove or replace this file "
            "(or re-extract the dataset), then load the dataset again."
        ) from err


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 tensor ``[N, C, H, W]``; transforms get tensors."""

    def __init__(
        self, images: torch.Tensor, targets: np.ndarray, transform: Callable | None = None
    ) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class ImageFileDataset(Dataset):
    """Image files ``root / files[i]`` loaded as RGB PIL images, then ``transform``."""

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        targets: np.ndarray,
        transform: Callable | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = files
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_image(self.root / self.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
