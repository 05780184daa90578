"""Bad input at every entry point of the few-shot theme: one clear error, no silent number."""

from __future__ import annotations

import numpy as np
import pytest

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.fewshot.episodes import episode_accuracies, fewshot_accuracy, sample_episodes
from mrl_analysis.fewshot.fluid import evaluate_fluid, fluid_accuracy, fluid_predictions
from mrl_analysis.fewshot.stream import make_stream
from mrl_analysis.fewshot.study import FewshotSpec, FluidSpec


def _data(bad: float | None = None):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    if bad is not None:
        x[7, 3] = bad
        x[21, 0] = bad
    return x, labels


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fewshot_entry_points_refuse_non_finite_features(bad):
    x, y = _data(bad)
    with pytest.raises(NonFiniteError, match="features holds 2 non-finite"):
        fewshot_accuracy(x, y, [2, 8], shots=(1,), ways=(2,), n_episodes=3, progress=False)
    with pytest.raises(NonFiniteError, match="features holds 2 non-finite"):
        episode_accuracies(x, y, [2, 8], shots=1, ways=2, queries=2, n_episodes=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fluid_entry_points_refuse_non_finite_features(bad):
    x, y = _data(bad)
    good, _ = _data()
    stream = make_stream(y, [0, 1], [2, 3], seed=0)
    with pytest.raises(NonFiniteError, match="features holds 2 non-finite"):
        fluid_predictions(x, stream, [2, 8], progress=False)
    with pytest.raises(NonFiniteError, match="features holds 2 non-finite"):
        evaluate_fluid(x, stream, [2, 8], progress=False)
    with pytest.raises(NonFiniteError, match="init_features holds 2 non-finite"):
        fluid_predictions(good, stream, [8], init_features=x, init_labels=y, progress=False)


def test_sizes_and_counts_are_integers_not_coerced():
    x, y = _data()
    with pytest.raises(TypeError, match="shots must be an integer"):
        sample_episodes(y, ways=2, shots=4.9)
    with pytest.raises(TypeError, match="ways must be an integer"):
        fewshot_accuracy(x, y, [8], shots=(1,), ways=("2",), progress=False)
    with pytest.raises(TypeError, match="nesting"):
        fewshot_accuracy(x, y, [4.0], shots=(1,), ways=(2,), progress=False)
    with pytest.raises(TypeError, match="n_boot must be an integer"):
        FewshotSpec(n_boot=10.5)
    stream = make_stream(y, [0, 1], [2, 3], seed=0)
    preds = np.zeros((2, len(stream)), dtype=np.int64)
    with pytest.raises(ValueError, match="strictly increasing"):
        fluid_accuracy(preds, stream, [8, 8])


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0, 0])
def test_stream_parameters_must_be_finite_and_positive(value):
    _, y = _data()
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        make_stream(y, [0, 1], [2, 3], alpha=value)
    # A NaN threshold made every class "tail" before: now refused where it is given.
    with pytest.raises(ValueError, match="head_threshold must be a finite number > 0"):
        FluidSpec(head_threshold=value)
    stream = make_stream(y, [0, 1], [2, 3], seed=0)
    with pytest.raises(ValueError, match="head_threshold"):
        stream.class_table(value)
    with pytest.raises(TypeError, match="alpha must be a number"):
        make_stream(y, [0, 1], [2, 3], alpha="1.5")
