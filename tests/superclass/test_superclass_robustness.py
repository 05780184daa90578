"""Bad input to the superclass theme fails at the call (issue 13, one test per defect
class): NaN / inf scores are counted and named, sizes are integers, never coerced."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.data.hierarchy import SuperclassMap
from mrl_analysis.superclass.metrics import per_superclass_accuracy, superclass_accuracy
from mrl_analysis.superclass.per_class import at_sizes, per_class_accuracy

SMAP = SuperclassMap(index=np.array([0, 0, 1, 1]), names=["a", "b"])
LABELS = np.array([0, 1, 2, 3, 0, 2])
SCORES = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("fn", [superclass_accuracy, per_superclass_accuracy])
def test_superclass_metrics_refuse_non_finite_scores(fn, value):
    scores = SCORES.copy()
    scores[1, 2, :2] = value
    with pytest.raises(NonFiniteError, match=r"scores holds 2 non-finite"):
        fn(scores, LABELS, [4, 8], SMAP)


def test_per_class_argmax_refuses_non_finite_scores():
    scores = SCORES.copy()
    scores[0, 0, 0] = np.nan  # argmax would silently predict class 0 for this sample
    with pytest.raises(NonFiniteError, match=r"scores holds 1 non-finite"):
        per_class_accuracy(scores, LABELS, [4, 8])


@pytest.mark.parametrize("size", [4.9, "8", 8.0])
def test_sizes_are_integers_not_coerced(size):
    with pytest.raises(TypeError, match="reference_size must be an integer"):
        per_class_accuracy(SCORES, LABELS, [4, 8], reference_size=size)
    table = per_class_accuracy(SCORES, LABELS, [4, 8])
    with pytest.raises(TypeError, match="must be an integer"):
        at_sizes(table, "MRL", [4, size], "MRL @ FF sizes")
    with pytest.raises(ValueError, match="strictly increasing"):
        superclass_accuracy(np.concatenate([SCORES, SCORES[:1]]), LABELS, [16, 4, 4], SMAP)
