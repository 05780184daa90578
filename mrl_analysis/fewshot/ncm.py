"""Nearest-class-mean (NCM) conventions shared by the few-shot episodes and the FLUID learner.

Features are truncated to their first ``m`` columns and L2-normalized *after* truncation (a
zero vector stays zero); a class mean is the average of its normalized samples.
``metric="cosine"`` (default, as in Meta-Baseline, Chen et al. 2021, which the paper cites
for NCM) scores a query by its cosine similarity to each mean; ``metric="euclidean"`` by the
negated squared distance between the normalized query and the mean (an average of unit
vectors, not renormalized). Ties go to the class listed first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

from mrl_analysis.core.checks import check_choice

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`."""
    return check_choice(metric, METRICS, "metric")


def prefix_norms(x: np.ndarray, nesting: Sequence[int]) -> np.ndarray:
    """L2 norms of ``x[..., :m]`` for every m in ``nesting``: ``[len(nesting), *x.shape[:-1]]``.

    Squares are summed block by block between consecutive sizes, so all sizes together cost
    one pass over the columns.
    """
    out = np.empty((len(nesting), *x.shape[:-1]), dtype=np.float64)
    total = np.zeros(x.shape[:-1], dtype=np.float64)
    prev = 0
    for g, m in enumerate(nesting):
        block = x[..., prev:m]
        total = total + np.einsum("...i,...i->...", block, block, dtype=np.float64)
        out[g] = total
        prev = m
    return np.sqrt(out)


def safe_norms(norms: np.ndarray) -> np.ndarray:
    """Norms to divide by: a zero norm becomes 1 so that a zero vector stays zero.

    Dividing (rather than multiplying by an inverse) keeps ``x / |x|`` exactly +-1 at m = 1,
    so exact ties between classes there stay exact ties, broken the same way everywhere.
    """
    return np.where(norms > 0, norms, 1.0)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS on one thread inside the block, restoring the setting after.

    Both learners issue many small products (one per chunk and size); on a shared 2-core
    machine, BLAS thread hand-offs made them 3-10x slower in wall time than one thread.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield
