"""A hand-made model and dataset bundle for the cache tests (and their worker processes).

The subprocess tests import this module so that the killed / racing processes build exactly
the same model and data as the test that checks them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mrl_analysis.models.network import build_model

N = 24
SMALL = {"batch_size": 4, "chunk_size": 8, "progress": False}


class ImageSet(Dataset):
    """Random 1x28x28 images with a transform applied on access, like a torchvision set."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None, fail_at=None):
        self.images, self.labels, self.transform, self.fail_at = images, labels, transform, fail_at

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise KeyboardInterrupt  # a Ctrl-C arriving in the middle of an extraction
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])


@dataclass
class TinyBundle:
    """The documented DatasetBundle fields, filled by hand."""

    dataset: Any
    targets: np.ndarray
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    sample_ids: list[str]
    transform: Any
    fingerprint: str
    split: str = "test"
    boxes: np.ndarray | None = None
    class_subset_indices: np.ndarray | None = None
    in_channels: int = 1
    image_size: int = 28
    name: str = "tiny"
    extra: dict = field(default_factory=dict)


def make_bundle(n=N, *, transform=None, fingerprint="tiny-v1", fail_at=None) -> TinyBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TinyBundle(
        dataset=ImageSet(images, labels, transform, fail_at),
        targets=labels.numpy().astype(np.int64),
        class_names=[f"class {i}" for i in range(10)],
        class_ids=[f"c{i}" for i in range(10)],
        hierarchy={f"c{i}": "even" if i % 2 == 0 else "odd" for i in range(10)},
        sample_ids=[f"test/{i}" for i in range(n)],
        transform=transform,
        fingerprint=fingerprint,
    )


def make_model(kind="mrl", seed=0, nesting=None):
    torch.manual_seed(seed)
    return build_model("resnet18", 10, kind, nesting, in_channels=1).eval()


def instrument(model, delay: float = 0.0) -> list[int]:
    """Record the batch sizes ``model.embed`` sees, optionally slowing each batch down."""
    seen: list[int] = []
    embed = model.embed

    def observed(x):
        seen.append(len(x))
        time.sleep(delay)
        return embed(x)

    model.embed = observed
    return seen


def inputs(bundle: TinyBundle) -> torch.Tensor:
    return torch.stack([bundle.dataset[i][0] for i in range(len(bundle.dataset))])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.is_dir())


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny batches gain nothing from more threads, and on a busy machine OpenMP's spinning
    threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
