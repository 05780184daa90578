"""Synthetic nested-like features for retrieval tests and benchmarks."""

from __future__ import annotations

import faiss
import numpy as np

from mrl_analysis.core.checks import check_int

__all__ = ["synthetic_nested"]

# Rows generated per block: bounds the noise temporaries of a million-row database.
_BLOCK = 65536


def synthetic_nested(
    n_database: int,
    n_queries: int,
    dim: int = 512,
    num_classes: int = 1000,
    *,
    decay: float = 1.0,
    noise: float = 1.0,
    normalize: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nested-like features: ``(database, database_labels, queries, query_labels)``.

    Item ``x`` of class ``y`` is ``s ⊙ (c_y + noise·ε)`` with class centroids
    ``c_y ~ N(0, I)``, ``ε ~ N(0, I)`` and per-dimension scale ``s_j = (1 + j)^(-decay/2)``.
    Every dimension has the same signal-to-noise ratio, but dimension ``j`` weighs
    ``(1 + j)^-decay`` in the L2 geometry, so the first dimensions carry most of the
    distance and accuracy rises with the prefix size and saturates, like an MRL embedding.
    ``normalize`` L2-normalizes rows at full size. Built in row blocks (float32 throughout).
    """
    counts = {"n_database": n_database, "n_queries": n_queries, "dim": dim}
    for name, value in {**counts, "num_classes": num_classes}.items():
        check_int(value, name, low=1)
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((num_classes, dim), dtype=np.float32)
    scale = (1.0 + np.arange(dim, dtype=np.float32)) ** np.float32(-decay / 2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, num_classes, n)
        x = np.empty((n, dim), dtype=np.float32)
        for a in range(0, n, _BLOCK):
            block = x[a : a + _BLOCK]
            np.take(centroids, labels[a : a + _BLOCK], axis=0, out=block)
            block += np.float32(noise) * rng.standard_normal(block.shape, dtype=np.float32)
            block *= scale
            if normalize:
                faiss.normalize_L2(block)
        return x, labels

    database, database_labels = draw(int(n_database))
    queries, query_labels = draw(int(n_queries))
    return database, database_labels, queries, query_labels
