"""The numbers notebook 04 states, on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.data.hierarchy import resolve_superclasses
from mrl_analysis.interpret.disagreement import find_disagreements
from mrl_analysis.interpret.headlines import cam_headlines, disagreement_headlines

CLASS_IDS = ["a0", "a1", "b0", "b1"]
# label, prediction at size 2, prediction at size 8
SAMPLES = [
    (0, 1, 0),  # fixed, wrong within A
    (0, 2, 0),  # fixed, wrong outside (b0 for a0)
    (1, 3, 1),  # fixed, wrong outside
    (2, 2, 3),  # broken, wrong within B
    (1, 1, 1),  # right at both
]


def _cases(hierarchy: dict[str, str] | None) -> pd.DataFrame:
    labels = np.array([s[0] for s in SAMPLES])
    logits = np.zeros((2, len(SAMPLES), 4), dtype=np.float32)
    for i, (_, small, large) in enumerate(SAMPLES):
        logits[0, i, small] = logits[1, i, large] = 3.0
    smap = None if hierarchy is None else resolve_superclasses(CLASS_IDS, stored=hierarchy)
    return find_disagreements(logits, labels, [2, 8], smap=smap)


def _value(table: pd.DataFrame, headline: str, subject: str) -> float:
    row = table[(table["headline"] == headline) & (table["subject"] == subject)]
    assert len(row) == 1, (headline, subject)
    return float(row["value"].iloc[0])


def test_disagreement_headlines_count_and_split_by_superclass():
    cases = _cases({"a0": "A", "a1": "A", "b0": "B", "b1": "B"})
    h = disagreement_headlines(cases, n_samples=5)
    assert _value(h, "n_cases", "fixed") == 3 and _value(h, "n_cases", "broken") == 1
    assert _value(h, "share_of_samples", "fixed") == pytest.approx(3 / 5)
    assert _value(h, "within_superclass_share", "fixed") == pytest.approx(1 / 3)
    assert _value(h, "within_superclass_share", "broken") == 1.0
    text = h.set_index(["headline", "subject"])["text"]
    assert text[("n_cases", "fixed")] == "3 samples are wrong at 2 dims and right at 8 (fixed)"
    # With a bootstrap interval over the three fixed cases (0 to 3 of them inside).
    assert text[("within_superclass_share", "fixed")] == (
        "33% of the fixed cases' errors at 2 dims stay inside the true superclass "
        "(95% interval 0%–100%)"
    )
    unlabelled = disagreement_headlines(_cases(None), n_samples=5)
    assert np.isnan(_value(unlabelled, "within_superclass_share", "fixed"))
    empty = disagreement_headlines(cases.iloc[:0], n_samples=5)
    assert empty["value"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="n_samples"):
        disagreement_headlines(cases, n_samples=0)


def test_cam_headlines_read_the_smallest_and_largest_sizes():
    similarity = pd.DataFrame(
        {
            "truncate_dim": [8, 1, 512],
            "metric": "spearman",
            "mean": [0.6, 0.25, 1.0],
            "sem": [0.05, 0.04, 0.0],
            "n": 64,
        }
    )
    h = cam_headlines(similarity)
    assert h["headline"].tolist() == ["spearman_at_smallest"]
    assert _value(h, "spearman_at_smallest", "1") == 0.25
    assert h["text"].iloc[0] == (
        "At d = 1 the CAM ranks the pixels like the d = 512 CAM with a mean Spearman "
        "correlation of 0.25 ± 0.04 over the 64 images with non-constant maps"
    )
    # Constant maps at d = 1 (no image counted): the next size speaks for the small end.
    flat = similarity.assign(
        mean=lambda t: t["mean"].where(t.truncate_dim != 1),
        n=lambda t: t["n"].where(t.truncate_dim != 1, 0),
    )
    h = cam_headlines(flat)
    assert h["headline"].tolist() == ["spearman_undefined", "spearman_at_smallest"]
    assert h["subject"].tolist() == ["1", "8"] and _value(h, "spearman_at_smallest", "8") == 0.6
    assert "nan" not in " ".join(h["text"])
    boxes = pd.DataFrame(
        {
            "truncate_dim": [1, 8, 512] * 3,
            "metric": ["pointing_hit"] * 3 + ["energy_in_box"] * 3 + ["box_area_fraction"] * 3,
            "mean": [0.5, 0.6, 0.7, 0.4, 0.45, 0.55, 0.3, 0.3, 0.3],
            "sem": 0.01,
            "n": 64,
        }
    )
    h = cam_headlines(similarity, boxes)
    assert _value(h, "pointing_hit", "1") == 0.5 and _value(h, "pointing_hit", "512") == 0.7
    assert _value(h, "energy_in_box", "512") == 0.55
    assert _value(h, "box_area_fraction", "all") == 0.3
    assert "peak falls in the object box for 70%" in h["text"].iloc[2]
    with pytest.raises(ValueError, match="spearman"):
        cam_headlines(boxes)
