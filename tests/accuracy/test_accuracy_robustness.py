"""Bad input to the accuracy theme fails at the call, naming the array and the count of
bad values, instead of a silently wrong accuracy (issue 13, one test per defect class)."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.accuracy.baselines import baseline_knn_accuracy, reduce
from mrl_analysis.accuracy.metrics import (
    interpolation_sizes,
    knn_accuracy,
    linear_accuracy,
    mrl_e_interpolated_accuracy,
)
from mrl_analysis.core.checks import NonFiniteError

RNG = np.random.default_rng(0)
TRAIN = RNG.normal(size=(40, 8)).astype(np.float32)
TEST = RNG.normal(size=(10, 8)).astype(np.float32)
Y_TRAIN, Y_TEST = RNG.integers(0, 3, 40), RNG.integers(0, 3, 10)


def _poisoned(x: np.ndarray, value: float, count: int = 2) -> np.ndarray:
    out = x.copy()
    out.flat[:count] = value
    return out


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_knn_refuses_non_finite_features(value):
    with pytest.raises(NonFiniteError, match=r"train_features holds 2 non-finite"):
        knn_accuracy(_poisoned(TRAIN, value), Y_TRAIN, TEST, Y_TEST, [2, 8])
    with pytest.raises(NonFiniteError, match=r"test_features holds 2 non-finite"):
        knn_accuracy(TRAIN, Y_TRAIN, _poisoned(TEST, value), Y_TEST, [2, 8])
    with pytest.raises(NonFiniteError, match=r"train holds 2 non-finite"):
        baseline_knn_accuracy(_poisoned(TRAIN, value), Y_TRAIN, TEST, Y_TEST, [2])
    with pytest.raises(NonFiniteError, match=r"test holds 2 non-finite"):
        reduce(TRAIN, _poisoned(TEST, value), 2, "svd")


@pytest.mark.parametrize("name", ["features", "weight", "bias"])
def test_mrl_e_interpolation_refuses_non_finite_inputs(name):
    args = {"features": TEST, "weight": RNG.normal(size=(3, 8)), "bias": np.zeros(3)}
    args[name] = _poisoned(np.asarray(args[name], dtype=np.float32), np.nan, 1)
    with pytest.raises(NonFiniteError, match=rf"{name} holds 1 non-finite"):
        mrl_e_interpolated_accuracy(
            args["features"], args["weight"], args["bias"], Y_TEST, [2, 4, 8]
        )


def test_linear_accuracy_refuses_non_finite_logits_with_their_count():
    logits = RNG.normal(size=(2, 10, 3)).astype(np.float32)
    logits[1, :3, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"logits holds 3 non-finite value\(s\)"):
        linear_accuracy(logits, Y_TEST, [4, 8], topk=1)


def test_a_nesting_describes_rows_and_is_never_reordered():
    logits = RNG.normal(size=(3, 10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="strictly increasing"):
        linear_accuracy(logits, Y_TEST, [16, 4, 4], topk=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        linear_accuracy(logits, Y_TEST, [16, 8, 4], topk=1)


@pytest.mark.parametrize("size", [4.9, "8", True, 4.0])
def test_sizes_are_integers_not_coerced(size):
    with pytest.raises(TypeError, match="must be an integer"):
        knn_accuracy(TRAIN, Y_TRAIN, TEST, Y_TEST, [2, size])
    with pytest.raises(TypeError, match="must be an integer"):
        interpolation_sizes([2, size])
    with pytest.raises(TypeError, match="must be an integer"):
        linear_accuracy(RNG.normal(size=(2, 10, 3)), Y_TEST, [2, size], topk=1)
    with pytest.raises(TypeError, match="must be an integer"):
        reduce(TRAIN, TEST, size, "first-m")
