"""Bad input to the interpretability theme fails at the call (issue 13, one test per defect
class): non-finite logits, images and CAMs are counted and named; sizes are integers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hand_caches import hand_cache

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.interpret.cam_metrics import cam_box_metrics, cam_rank_similarity
from mrl_analysis.interpret.cams import size_cams
from mrl_analysis.interpret.disagreement import find_disagreements, pairwise_disagreement
from mrl_analysis.interpret.study import cache_disagreements
from mrl_analysis.models.network import build_model

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 4, 30)
LOGITS = RNG.normal(size=(3, 30, 4)).astype(np.float32)
NESTING = [2, 4, 8]


def test_disagreements_refuse_non_finite_logits():
    bad = LOGITS.copy()
    bad[0, 3, :2] = np.nan
    with pytest.raises(NonFiniteError, match=r"logits holds 2 non-finite"):
        find_disagreements(bad, LABELS, NESTING)
    with pytest.raises(NonFiniteError, match=r"logits holds 2 non-finite"):
        pairwise_disagreement(bad, LABELS, NESTING)


@pytest.mark.parametrize("size", [4.9, "8", 8.0])
def test_disagreement_sizes_are_integers(size):
    cache = hand_cache("mrl", NESTING, LOGITS, LABELS)
    with pytest.raises(TypeError, match="must be an integer"):
        cache_disagreements(cache, small=size)
    with pytest.raises(TypeError, match="must be an integer"):
        find_disagreements(LOGITS, LABELS, NESTING, large=size)


def test_cam_inputs_must_be_finite():
    torch.manual_seed(0)
    model = build_model("resnet18", 4, "mrl", NESTING, in_channels=1).eval()
    images = torch.rand(2, 1, 28, 28)
    images[1, 0, :3, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"images holds 3 non-finite"):
        size_cams(model, images)
    cams = RNG.random((2, 3, 8, 8)).astype(np.float32)
    cams[0, 1, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"cams holds 1 non-finite"):
        cam_rank_similarity(cams, NESTING)
    with pytest.raises(NonFiniteError, match=r"cams holds 1 non-finite"):
        cam_box_metrics(cams, np.zeros((2, 4)), NESTING)


@pytest.mark.parametrize("size", [4.9, "8"])
def test_cam_sizes_are_integers(size):
    cams = RNG.random((2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(TypeError, match="must be an integer"):
        cam_rank_similarity(cams, [2, 4, size])
    with pytest.raises(TypeError, match="reference must be an integer"):
        cam_rank_similarity(cams, NESTING, reference=size)
