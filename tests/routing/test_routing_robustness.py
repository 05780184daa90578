"""Bad input to the routing theme fails at the call (issue 13, one test per defect class):
NaN / inf scores, probabilities and confidences are counted and named; sizes are integers."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.routing.cascade import (
    SplitSettings,
    cascade_study,
    cascade_study_reduced,
    learn_thresholds,
)
from mrl_analysis.routing.oracle import first_correct_shares, oracle_summary
from mrl_analysis.routing.router import router_features, router_study

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 4, 200)
LOGITS = RNG.normal(size=(3, 200, 4)).astype(np.float32)
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
NESTING = [2, 4, 8]
FEW = SplitSettings(n_splits=2)


def _nan(x: np.ndarray, count: int = 1) -> np.ndarray:
    out = x.copy()
    out[1].flat[:count] = np.nan
    return out


def test_oracle_refuses_non_finite_scores():
    # NaN logits would make the argmax predict class 0: a wrong oracle, silently.
    with pytest.raises(NonFiniteError, match=r"scores holds 3 non-finite"):
        oracle_summary(_nan(LOGITS, 3), LABELS, NESTING)
    with pytest.raises(NonFiniteError, match=r"scores holds 1 non-finite"):
        first_correct_shares(_nan(LOGITS), LABELS, NESTING)


def test_cascade_refuses_non_finite_probabilities_and_confidences():
    with pytest.raises(NonFiniteError, match=r"probabilities holds 2 non-finite"):
        cascade_study(_nan(PROBS, 2), LABELS, NESTING, settings=FEW)
    confidence = PROBS.max(axis=2)
    correct = PROBS.argmax(axis=2) == LABELS
    bad = confidence.copy()
    bad[0, :4] = np.inf
    with pytest.raises(NonFiniteError, match=r"confidence holds 4 non-finite"):
        learn_thresholds(bad, correct, NESTING)
    with pytest.raises(NonFiniteError, match=r"confidence holds 4 non-finite"):
        cascade_study_reduced(bad, correct, NESTING, settings=FEW)


def test_router_refuses_non_finite_probabilities():
    with pytest.raises(NonFiniteError, match=r"probabilities holds 1 non-finite"):
        router_study(_nan(PROBS), LABELS, NESTING, settings=FEW)
    bad = PROBS.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"probabilities holds 1 non-finite"):
        router_features(bad, NESTING)
    with pytest.raises(NonFiniteError, match=r"tta_probabilities holds 1 non-finite"):
        router_features(PROBS, NESTING, tta_probabilities=bad)


@pytest.mark.parametrize("size", [2.5, "2", 2.0])
def test_router_input_sizes_are_integers(size):
    with pytest.raises(TypeError, match="input_sizes entry must be an integer"):
        router_features(PROBS, NESTING, [size])
    with pytest.raises(ValueError, match="strictly increasing"):
        oracle_summary(LOGITS, LABELS, [8, 4, 4])
