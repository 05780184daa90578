"""Evaluation and training transforms (``torchvision.transforms.v2``) shared by the sources.

Each source builds its pair ``(evaluation, training)`` for an image size from one of the two
recipes here: :func:`image_transforms` for PIL images read from files, and
:func:`tensor_transforms` for uint8 tensors held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transforms(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize: int | None,
    crop_scale: tuple[float, float],
) -> tuple[v2.Compose, v2.Compose]:
    """Resize + centre crop (when ``resize``) / random resized crop + flip, then normalize."""
    tail = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]
    head = [v2.Resize(resize), v2.CenterCrop(size)] if resize else []
    return (
        v2.Compose([*head, *tail]),
        v2.Compose(
            [v2.RandomResizedCrop(size, scale=crop_scale), v2.RandomHorizontalFlip(), *tail]
        ),
    )


def tensor_transforms(
    size: int, padding: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[v2.Compose, v2.Compose]:
    """Normalize / flip + padded random crop, then normalize (CIFAR-style augmentation)."""
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return (
        v2.Compose(tail),
        v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(size, padding=padding), *tail]),
    )
