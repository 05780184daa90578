"""Input checks, defined once for the whole library.

Every public function that takes arrays or sizes from a user validates them here, so that a
bad input fails at the call with one line naming the argument, what was wrong and how to fix
it, instead of a traceback deep inside numpy or faiss, or, worse, a silently wrong number.

Conventions:

* a **nesting** describes rows of an array (one row of logits per size): strictly
  increasing positive integers, never reordered, so ``[16, 4, 4]`` is an error rather than
  a table whose rows are labelled wrongly;
* **sizes** are what a caller asks to evaluate: integers within ``1..dim``; order and
  repeats do not matter, the result is sorted and de-duplicated;
* a size is an integer: ``4.9``, ``"8"`` or ``True`` are rejected, not coerced;
* arrays must be finite: NaN / inf are counted and reported with the array's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any

import numpy as np

#: Rows per block when scanning a large (possibly memory-mapped) array for NaN / inf.
_FINITE_BLOCK = 1 << 22


class NonFiniteError(ValueError):
    """An array holds NaN or infinite values."""


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int``; floats, strings and bools are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{'' if low is None else low}..{'' if high is None else high}"
        raise ValueError(f"{name} must lie in {span}, got {value}")
    return value


def count_nonfinite(array: np.ndarray) -> int:
    """How many NaN / inf values ``array`` holds, read block by block (memmaps stay lazy)."""
    if not np.issubdtype(array.dtype, np.inexact):
        return 0
    if array.ndim == 0 or array.size <= _FINITE_BLOCK:
        return int(array.size - np.count_nonzero(np.isfinite(array)))
    flat = array.reshape(array.shape[0], -1)
    rows = max(1, _FINITE_BLOCK // max(1, flat.shape[1]))
    return sum(
        int(block.size - np.count_nonzero(np.isfinite(block)))
        for block in (flat[i : i + rows] for i in range(0, flat.shape[0], rows))
    )


def check_finite(array: Any, name: str, *, allow_neg_inf: bool = False) -> np.ndarray:
    """``array`` unchanged if all its values are finite, else a :class:`NonFiniteError`.

    ``allow_neg_inf``: ``-inf`` is a legitimate logit (a class outside a class subset);
    NaN and ``+inf`` are still refused.
    """
    if not hasattr(array, "dtype"):
        array = np.asarray(array)
    bad = count_nonfinite(array)
    if bad and allow_neg_inf:
        bad -= int(np.count_nonzero(np.isneginf(array)))
    if bad:
        raise NonFiniteError(
            f"{name} holds {bad} non-finite value(s) (NaN or inf) out of {array.size}; "
            "recompute it (a diverged model or a corrupted file) before analysing it"
        )
    return array


def check_features(features: Any, name: str = "features", *, finite: bool = True) -> np.ndarray:
    """``features`` as a 2-D floating array ``[N, d]`` (not copied when already one)."""
    x = features if hasattr(features, "ndim") else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = x.astype(np.float32)
    return check_finite(x, name) if finite else x


def check_labels(
    labels: Any, n: int | None = None, name: str = "labels", *, num_classes: int | None = None
) -> np.ndarray:
    """``labels`` as int64 ``[n]`` class indices in ``0..num_classes-1`` (any ``n`` if None)."""
    y = np.asarray(labels)
    n = y.shape[0] if n is None and y.ndim == 1 else n
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D array with one label per sample ({n}), got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if y.size:
            raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got minimum {y.min()}")
    if y.size and num_classes is not None and y.max() >= num_classes:
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} (the number of classes), got maximum "
            f"{y.max()}"
        )
    return y


def check_nesting(
    nesting: Iterable[Any], dim: int | None = None, name: str = "nesting"
) -> list[int]:
    """``nesting`` as strictly increasing positive ints (at most ``dim``), never reordered."""
    sizes = [check_int(m, f"{name} entry") for m in nesting]
    if not sizes:
        raise ValueError(f"{name} is empty: give at least one representation size")
    if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ValueError(
            f"{name} must be strictly increasing positive sizes (one per row, in order), "
            f"got {sizes}"
        )
    if dim is not None and sizes[-1] > dim:
        raise ValueError(
            f"{name} {sizes} goes beyond the feature dimension {dim}; drop the larger sizes "
            "or pass the full features"
        )
    return sizes


def check_sizes(sizes: Iterable[Any], dim: int, name: str = "sizes") -> list[int]:
    """Sizes to evaluate: sorted distinct ints within ``1..dim``."""
    values = sorted({check_int(m, f"{name} entry") for m in sizes})
    if not values:
        raise ValueError(f"{name} is empty: give at least one representation size")
    if values[0] < 1 or values[-1] > dim:
        raise ValueError(
            f"{name} {values} must lie within 1..{dim} (the feature dimension); drop larger "
            "sizes or pass the full features"
        )
    return values


def check_truncate_dim(truncate_dim: Any, nesting: Sequence[int], *, any_size: bool = False) -> int:
    """One size: a member of ``nesting`` (or any ``1..nesting[-1]`` with ``any_size``)."""
    m = check_int(truncate_dim, "truncate_dim")
    if any_size:
        if not 1 <= m <= nesting[-1]:
            raise ValueError(f"truncate_dim must lie in 1..{nesting[-1]}, got {m}")
    elif m not in nesting:
        raise ValueError(f"truncate_dim {m} is not a nesting size; choose one of {list(nesting)}")
    return m


def check_ks(ks: Any, upper: int | None = None, name: str = "ks", what: str = "") -> list[int]:
    """A k or several as sorted distinct ints in ``1..upper``."""
    items = [ks] if isinstance(ks, Integral | str | float) else list(ks)
    values = sorted({check_int(k, f"{name} entry") for k in items})
    if not values:
        raise ValueError(f"{name} is empty: give at least one k, e.g. {name}=(1,)")
    bad = [k for k in values if k < 1 or (upper is not None and k > upper)]
    if bad:
        span = f"1..{upper}" if upper is not None else ">= 1"
        raise ValueError(f"{name} values {bad} must lie in {span}{f' ({what})' if what else ''}")
    return values


def check_fraction(value: Any, name: str, *, allow_one: bool = True) -> float:
    """A share or tolerance in ``[0, 1]`` (fractions everywhere, never percent)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0) or (not allow_one and v == 1.0) or not np.isfinite(v):
        raise ValueError(f"{name} is a fraction in [0, 1] (0.01 = one point), got {value!r}")
    return v


def check_scores(
    scores: Any,
    labels: Any,
    nesting: Sequence[Any],
    name: str = "scores",
    *,
    finite: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Validate ``scores [G, N, C]`` (logits or probabilities), ``labels [N]``, ``nesting``.

    Returns ``(scores, int64 labels, nesting)``; ``scores`` is not copied, so a
    memory-mapped cache array stays lazy. ``-inf`` logits (classes outside a class subset)
    are allowed; NaN and ``+inf`` are not.
    """
    sizes = check_nesting(nesting)
    if not hasattr(scores, "shape"):
        scores = np.asarray(scores)
    if scores.ndim != 3:
        hint = f" (one size? pass {name}[None])" if scores.ndim == 2 else ""
        raise ValueError(
            f"{name} must have shape [len(nesting), N, num_classes], got {scores.shape}{hint}"
        )
    if scores.shape[0] != len(sizes):
        raise ValueError(
            f"{name} has {scores.shape[0]} rows but nesting has {len(sizes)} sizes {sizes}: "
            "give one row per nesting size"
        )
    labels = check_labels(labels, scores.shape[1], "labels", num_classes=scores.shape[2])
    if labels.size == 0:
        raise ValueError("no samples: labels is empty")
    if finite:
        check_finite(scores, name, allow_neg_inf=True)
    return scores, labels, sizes


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``choices`` (a metric, a distribution...), else a ValueError."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: use one of {tuple(choices)}")
    return value


def check_table(table: Any, columns: Iterable[str], source: str) -> Any:
    """``table`` (a DataFrame) if it has ``columns`` and rows; ``source``: what makes one."""
    missing = set(columns) - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; pass a table from {source}")
    if table.empty:
        raise ValueError(f"table is empty; pass a table from {source}")
    return table
