"""Numerical basics: the one softmax of the library."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1, dtype: type = np.float32) -> np.ndarray:
    """Numerically stable softmax along ``axis``, as ``dtype`` (a new array).

    ``-inf`` logits (classes outside a class subset) get probability 0.
    """
    x = np.array(logits, dtype=dtype, copy=True)
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def predictions(scores: np.ndarray) -> np.ndarray:
    """Top-1 class per size and sample, ``int64 [G, N]``, from scores ``[G, N, C]``.

    One size at a time, so a memory-mapped ``[G, N, C]`` array is read once and never
    copied whole.
    """
    return np.stack([np.asarray(s).argmax(axis=-1) for s in scores])
