"""Post-hoc dimensionality reductions of a fixed-feature (FF) representation.

The paper's baselines for nesting a model that was not trained for it (Figures 2-3,
Appendix C): keep the first m features of the largest FF model ("Rand. FS"), project onto
its top-m singular directions ("SVD", fit on the train features) or project with a seeded
random Gaussian matrix ("JL", Johnson-Lindenstrauss).

SVD is fit without centering: at m = d it is then a rotation, so L2
distances and norms are unchanged and the k-NN accuracy equals that of the original
features. Both projections are nested: the top-m singular directions are the first m of
the top-M ones, and a Gaussian matrix with M rows drawn from a seed starts with the m-row
matrix drawn from the same seed (up to a scale that L2 normalization removes).
:func:`baseline_knn_accuracy` therefore fits once at the largest size and truncates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.linalg
from sklearn.random_projection import GaussianRandomProjection

from mrl_analysis.accuracy.metrics import BASELINE_NAMES, Outcomes, knn_outcomes, method_label
from mrl_analysis.core.checks import check_features, check_int, check_sizes
from mrl_analysis.core.stats import N_BOOT

BASELINE_METHODS: tuple[str, ...] = tuple(BASELINE_NAMES)


def _check_pair(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train, test = check_features(train, "train"), check_features(test, "test")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train has d = {train.shape[1]} but test has d = {test.shape[1]}; use features "
            "of the same model"
        )
    return train, test


def reduce(
    train: np.ndarray, test: np.ndarray, m: int, method: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce ``train [N, d]`` and ``test [Q, d]`` to m dimensions (float32).

    ``method``: ``"first-m"`` (the first m features), ``"svd"`` (top-m right singular
    vectors of the train features, uncentered, exact) or ``"jl"``
    (sklearn's ``GaussianRandomProjection`` with ``random_state=seed``). The projection is
    always fit on ``train`` only.
    """
    train, test = _check_pair(train, test)
    n, d = train.shape
    if method not in BASELINE_METHODS:
        raise ValueError(f"unknown reduction {method!r}: use one of {BASELINE_METHODS}")
    m = check_int(m, "m", low=1, high=d)
    if method == "first-m":
        return (
            np.ascontiguousarray(train[:, :m], dtype=np.float32),
            np.ascontiguousarray(test[:, :m], dtype=np.float32),
        )
    if method == "svd":
        if m > n:
            raise ValueError(
                f"SVD to m = {m} needs at least m train samples, got {n}; use smaller sizes"
            )
        # The right singular vectors are the eigenvectors of the d x d Gram matrix: exact, and
        # on 60k x 512 features 0.5 s on one thread at any m, where sklearn's randomized
        # TruncatedSVD takes 1.3 s at m = 64 and 8 s at 512 and a thin SVD 7.7 s.
        x = train.astype(np.float64)
        _, vectors = scipy.linalg.eigh(x.T @ x)
        top = np.ascontiguousarray(vectors[:, ::-1][:, :m], dtype=np.float32)  # descending
        return train @ top, test @ top
    projection = GaussianRandomProjection(n_components=m, random_state=seed)
    projection.fit(train)
    return (
        projection.transform(train).astype(np.float32, copy=False),
        projection.transform(test).astype(np.float32, copy=False),
    )


def baseline_knn_outcomes(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    sizes: Iterable[int],
    methods: Sequence[str] = BASELINE_METHODS,
    k: int | Iterable[int] = (1,),
    model: str | None = "FF",
    *,
    seed: int = 0,
    normalize: bool = True,
    batch_size: int = 8192,
) -> list[Outcomes]:
    """k-NN correctness of each post-hoc reduction of an FF model's features, per size:
    one :class:`~mrl_analysis.accuracy.metrics.Outcomes` per method, in ``methods`` order.

    Pass the largest FF model's train/test features. Each method is fit once at
    ``max(sizes)`` and truncated to every smaller m (the reductions are nested, see the
    module docstring); the k-NN itself is :func:`mrl_analysis.accuracy.metrics.knn_outcomes`,
    normalizing after reduction. Legend labels read ``"FF Rand. FS"``, ``"FF SVD"``,
    ``"FF JL"``.
    """
    unknown = [name for name in methods if name not in BASELINE_METHODS]
    if unknown or not methods:
        raise ValueError(f"methods {list(methods)} must be drawn from {BASELINE_METHODS}")
    train, test = _check_pair(train, test)
    sizes = check_sizes(sizes, train.shape[1])
    outcomes = []
    for method in methods:
        train_m, test_m = reduce(train, test, sizes[-1], method, seed)
        outcomes.append(
            knn_outcomes(
                train_m,
                train_labels,
                test_m,
                test_labels,
                sizes,
                k=k,
                normalize=normalize,
                model=model,
                method=method,
                batch_size=batch_size,
                label=method_label(model, method, baseline=True),
            )
        )
    return outcomes


def baseline_knn_accuracy(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    sizes: Iterable[int],
    methods: Sequence[str] = BASELINE_METHODS,
    k: int | Iterable[int] = (1,),
    model: str | None = "FF",
    *,
    seed: int = 0,
    normalize: bool = True,
    batch_size: int = 8192,
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """The tables of :func:`baseline_knn_outcomes` (with bootstrap intervals), stacked:
    rows carry ``method`` in ``methods``."""
    outcomes = baseline_knn_outcomes(
        train,
        train_labels,
        test,
        test_labels,
        sizes,
        methods,
        k,
        model,
        seed=seed,
        normalize=normalize,
        batch_size=batch_size,
    )
    return pd.concat([o.table(n_boot) for o in outcomes], ignore_index=True)
