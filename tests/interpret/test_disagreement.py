"""The disagreement finder on a hand-made cache returns exactly the expected samples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.data.hierarchy import resolve_superclasses
from mrl_analysis.interpret.disagreement import (
    case_labels,
    disagreement_summary,
    find_disagreements,
    pairwise_disagreement,
)
from mrl_analysis.interpret.plots import disagreement_summary_figure, pairwise_disagreement_figure
from mrl_analysis.interpret.study import cache_disagreements, cache_superclasses, top_cases
from mrl_analysis.models.network import build_model

CLASS_IDS = ["a0", "a1", "b0", "b1"]
HIERARCHY = {"a0": "A", "a1": "A", "b0": "B", "b1": "B"}
NESTING = [2, 4, 8]
#: per sample: label, then (predicted class, logit strength) at sizes 2, 4, 8
SAMPLES = [
    (0, (1, 5.0), (0, 5.0), (0, 5.0)),  # 0: fixed, wrong within superclass A, most confident
    (0, (2, 3.0), (2, 1.0), (0, 6.0)),  # 1: fixed, wrong outside (b0 for a0)
    (1, (1, 4.0), (1, 4.0), (1, 4.0)),  # 2: right everywhere
    (3, (0, 4.0), (0, 4.0), (1, 4.0)),  # 3: wrong everywhere
    (2, (2, 4.0), (2, 4.0), (3, 4.0)),  # 4: broken, wrong within superclass B
    (2, (3, 4.0), (2, 4.0), (3, 4.0)),  # 5: wrong at 2 and 8, right only at 4
    (1, (3, 2.0), (3, 2.0), (1, 4.0)),  # 6: fixed, outside, least confident
    (3, (3, 1.0), (3, 1.0), (3, 1.0)),  # 7: right everywhere
]


def _hand_made_logits() -> tuple[np.ndarray, np.ndarray]:
    logits = np.zeros((len(NESTING), len(SAMPLES), len(CLASS_IDS)), dtype=np.float32)
    for i, (_, *per_size) in enumerate(SAMPLES):
        for g, (pred, strength) in enumerate(per_size):
            logits[g, i, pred] = strength
    return logits, np.array([s[0] for s in SAMPLES])


class LookupHead(nn.Module):
    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.from_numpy(logits))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.table[:, features[:, 0].long()]


class LookupModel(nn.Module):
    """A 'model' whose logits for sample i are row i of a fixed table (the input is i)."""

    kind = "mrl"
    nesting = NESTING

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.fc = LookupHead(logits)
        self.meta: dict = {}
        self.config = {"arch": "lookup", "kind": "mrl"}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (0, 7))  # [N, 8]: the sample index, then zeros


@pytest.fixture
def hand_made_cache(tmp_path):
    logits, labels = _hand_made_logits()
    index = torch.arange(len(labels), dtype=torch.float32)
    bundle = SimpleNamespace(
        name="hand-made",
        split="test",
        dataset=TensorDataset(index[:, None], torch.tensor(labels)),
        targets=labels,
        class_names=[f"class {c}" for c in CLASS_IDS],
        class_ids=CLASS_IDS,
        hierarchy=HIERARCHY,
        sample_ids=[f"test/{i}" for i in range(len(labels))],
        fingerprint="hand-made-v1",
    )
    return embed_dataset(LookupModel(logits), bundle, tmp_path / "cache", progress=False)


def test_hand_made_cache_gives_exactly_the_expected_cases(hand_made_cache):
    np.testing.assert_array_equal(hand_made_cache.logits(), _hand_made_logits()[0])
    table = cache_disagreements(hand_made_cache)
    got = list(zip(table["direction"], table["rank"], table["sample_index"], strict=True))
    assert got == [("fixed", 1, 0), ("fixed", 2, 1), ("fixed", 3, 6), ("broken", 1, 4)]
    assert table["confusion"].tolist() == [
        "within superclass",
        "outside superclass",
        "outside superclass",
        "within superclass",
    ]
    assert table["wrong_superclass"].tolist() == ["A", "B", "B", "B"]
    assert table["sample_id"].tolist() == ["test/0", "test/1", "test/6", "test/4"]
    assert table["label_name"].tolist() == ["class a0", "class a0", "class a1", "class b0"]
    assert table["n_sizes_correct"].tolist() == [2, 1, 1, 2]
    assert (table["small_dim"] == 2).all() and (table["large_dim"] == 8).all()
    p = np.exp(5.0) / (np.exp(5.0) + 3)
    np.testing.assert_allclose(table.loc[0, ["prob_small", "prob_large", "score"]], [p, p, p])


def test_other_pairs_directions_and_top(hand_made_cache):
    mid = cache_disagreements(hand_made_cache, small=4, large=8)
    assert sorted(mid["sample_index"]) == [1, 4, 5, 6]
    assert mid.set_index("sample_index")["direction"].to_dict() == {
        1: "fixed",
        4: "broken",
        5: "broken",
        6: "fixed",
    }
    broken = cache_disagreements(hand_made_cache, small=2, large=4, direction="broken")
    assert broken["sample_index"].tolist() == [] and broken.columns.size > 10
    fixed = cache_disagreements(hand_made_cache, small=2, large=4, direction="fixed", top=1)
    assert fixed["sample_index"].tolist() == [0]  # fixed at 4: samples 0 and 5; 0 is surer
    top = top_cases(cache_disagreements(hand_made_cache), 2)
    assert list(zip(top["direction"], top["sample_index"], strict=True)) == [
        ("fixed", 0),
        ("fixed", 1),
        ("broken", 4),
    ]


def test_plain_arrays_without_a_hierarchy():
    logits, labels = _hand_made_logits()
    table = find_disagreements(logits, labels, NESTING)
    assert table["sample_index"].tolist() == [0, 1, 6, 4]
    assert table["confusion"].isna().all() and "label_name" not in table
    with pytest.raises(ValueError, match="not one of the sizes"):
        find_disagreements(logits, labels, NESTING, small=3)
    with pytest.raises(ValueError, match="must be a smaller size"):
        find_disagreements(logits, labels, NESTING, small=8, large=2)
    with pytest.raises(ValueError, match="rows but nesting has"):
        find_disagreements(logits, labels, [2, 4])


def test_reject_group_is_not_a_superclass():
    logits, labels = _hand_made_logits()
    smap = resolve_superclasses(CLASS_IDS, stored={"a0": "A", "a1": "A"})  # b0, b1 unmapped
    table = find_disagreements(logits, labels, NESTING, smap=smap)
    by_sample = table.set_index("sample_index")["confusion"]
    assert by_sample[0] == "within superclass" and by_sample[1] == "outside superclass"
    assert pd.isna(by_sample[4])  # b0 → b1 inside the pooled reject group
    assert cache_superclasses(SimpleNamespace(hierarchy=None)) is None


def test_summary_and_pairwise_counts():
    logits, labels = _hand_made_logits()
    smap = resolve_superclasses(CLASS_IDS, stored=HIERARCHY)
    cases = find_disagreements(logits, labels, NESTING, smap=smap)
    summary = disagreement_summary(cases, model="x")
    counts = summary.set_index(["direction", "confusion"])["n"].to_dict()
    assert counts == {
        ("broken", "within superclass"): 1,
        ("fixed", "outside superclass"): 2,
        ("fixed", "within superclass"): 1,
    }
    assert len(disagreement_summary_figure(summary).data) == 2  # one trace per confusion
    assert case_labels(cases)[0] == "#0 0<br>fixed, within superclass"
    pairs = pairwise_disagreement(logits, labels, NESTING, model="x")
    expected = pd.DataFrame(
        {
            "small_dim": [2, 2, 4],
            "large_dim": [4, 8, 8],
            "n_fixed": [2, 3, 2],
            "n_broken": [0, 1, 2],
        }
    )
    pd.testing.assert_frame_equal(
        pairs[expected.columns].reset_index(drop=True), expected, check_dtype=False
    )
    assert len(pairwise_disagreement_figure(pairs).data) == 2


def test_mrl_e_cache_at_any_size(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 4, "mrl-e", [2, 512], in_channels=1).eval()
    images = torch.randn(24, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(24) % 4
    bundle = SimpleNamespace(
        dataset=TensorDataset(images, labels), fingerprint="rand", targets=None
    )
    cache = embed_dataset(model, bundle, tmp_path / "c", progress=False)
    table = cache_disagreements(cache, small=3, large=100)
    right3 = cache.logits_at(3).argmax(1) == labels.numpy()
    right100 = cache.logits_at(100).argmax(1) == labels.numpy()
    assert set(table.loc[table["direction"] == "fixed", "sample_index"]) == set(
        np.flatnonzero(~right3 & right100)
    )
    assert set(table.loc[table["direction"] == "broken", "sample_index"]) == set(
        np.flatnonzero(right3 & ~right100)
    )
    assert (table["small_dim"] == 3).all()


def test_disagreement_shares_carry_bootstrap_intervals():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 400)
    logits = rng.normal(size=(3, 400, 4)).astype(np.float32)
    logits[2, np.arange(400), labels] += 1.0
    smap = resolve_superclasses(CLASS_IDS, stored=HIERARCHY)
    pairs = pairwise_disagreement(logits, labels, NESTING)
    for share in ("fixed_share", "broken_share"):
        assert (pairs[f"{share}_ci_low"] < pairs[share]).all()
        assert (pairs[share] < pairs[f"{share}_ci_high"]).all()
    np.testing.assert_allclose(pairs["fixed_share"], pairs["n_fixed"] / 400)
    cases = find_disagreements(logits, labels, NESTING, smap=smap)
    summary = disagreement_summary(cases)
    assert (summary["share_ci_low"] <= summary["share"]).all()
    assert (summary["share"] <= summary["share_ci_high"]).all()
    # The interval of a share is over the cases of its direction only.
    fixed = summary[summary["direction"] == "fixed"]
    assert fixed["share"].sum() == pytest.approx(1.0)
    assert fixed["n"].sum() == (cases["direction"] == "fixed").sum()
