"""Reference implementations the retrieval tests compare the library with (numpy, float64),
and real caches of hand-made features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.models.network import MRLHead


def value(table: pd.DataFrame, metric: str, k: int) -> float:
    """The one value of ``metric@k`` in a ``(metric, k, value)`` table."""
    row = table[(table["metric"] == metric) & (table["k"] == k)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_ranking(queries: np.ndarray, database: np.ndarray, m: int) -> np.ndarray:
    """All database rows by exact L2 distance at size m, in float64."""
    q, db = normalize(queries[:, :m]), normalize(database[:, :m])
    dist = (q * q).sum(1)[:, None] + (db * db).sum(1)[None] - 2 * q @ db.T
    return np.argsort(dist, axis=1, kind="stable")


class _Rows(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.as_tensor(self.x[i]), int(self.y[i])


class _Identity(nn.Module):
    """The model contract over hand-made feature rows: embed is the identity."""

    def __init__(self, nesting: list[int], kind: str, num_classes: int):
        super().__init__()
        self.nesting, self.kind, self.meta, self.config = nesting, kind, {}, {}
        self.fc = MRLHead(nesting, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class _Bundle:
    dataset: Dataset
    targets: np.ndarray
    fingerprint: str
    class_names: list[str]
    split: str


def feature_cache(
    root: Path, name: str, split: str, x: np.ndarray, y: np.ndarray, nesting, kind: str = "mrl"
) -> EmbeddingCache:
    """A real cache of hand-made feature rows (the model's embedding is the identity)."""
    classes = int(y.max()) + 1
    bundle = _Bundle(_Rows(x, y), y, f"{name}-{split}", [f"c{i}" for i in range(classes)], split)
    model = _Identity(list(nesting), kind, classes)
    return embed_dataset(model, bundle, root / name / split, batch_size=256, progress=False)
