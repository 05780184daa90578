"""Hand-made :class:`EmbeddingCache` objects for the theme tests (no model, no disk).

A real ``EmbeddingCache`` over in-memory arrays: the manifest carries what the themes read
(kind, nesting, class ids / names, hierarchy), the arrays are the features, per-size
logits and labels a test chooses. Studies and ``findings`` functions take
``{display name: EmbeddingCache}`` mappings of these exactly as of caches on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrl_analysis.cache.reader import EmbeddingCache


def hand_cache(
    kind: str,
    nesting: list[int],
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    features: np.ndarray | None = None,
    class_ids: list[str] | None = None,
    class_names: list[str] | None = None,
    hierarchy: dict[str, str] | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> EmbeddingCache:
    """A cache of ``logits [G, N, C]`` (one row per size in ``nesting``) and ``labels [N]``.

    ``features`` default to random ``[N, nesting[-1]]`` values; ``head`` is MRL-E's shared
    ``(weight [C, d], bias [C])``.
    """
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = logits.shape[1], logits.shape[2]
    if features is None:
        features = np.random.default_rng(0).normal(size=(n, nesting[-1]))
    ids = class_ids or [f"c{i}" for i in range(c)]
    arrays = {
        "features": np.asarray(features, dtype=np.float32),
        "logits": logits,
        "labels": labels,
        "sample_ids": np.array([f"s{i}" for i in range(n)]),
    }
    if head is not None:
        arrays["head_weight"] = np.asarray(head[0], dtype=np.float32)
        arrays["head_bias"] = np.asarray(head[1], dtype=np.float32)
    manifest = {
        "provenance": {"kind": kind, "nesting": list(nesting)},
        "class_names": class_names or list(ids),
        "class_ids": ids,
        "hierarchy": hierarchy,
        "dataset": {},
    }
    return EmbeddingCache(Path("in-memory"), manifest, arrays)


def one_hot_logits(preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits ``[G, N, C]`` whose argmax is ``preds [G, N]``: 3 on the prediction, 1 elsewhere."""
    return (1 + 2 * np.eye(num_classes, dtype=np.float32)[np.asarray(preds)]).astype(np.float32)


def predictions_right_on(labels: np.ndarray, right: np.ndarray, num_classes: int) -> np.ndarray:
    """Predictions ``[G, N]``: the label where ``right [G, N]``, else the next class."""
    labels = np.asarray(labels)
    return np.where(right, labels[None, :], (labels[None, :] + 1) % num_classes)
