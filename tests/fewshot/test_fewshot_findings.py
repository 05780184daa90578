"""Finding (g): few-shot saturation vs shots, on caches of hand-made features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.core.findings import FAILS, HOLDS, UNMEASURED, findings_table
from mrl_analysis.fewshot.study import CLAIM_G, findings
from mrl_analysis.models.network import MRLHead

K, PER_CLASS = 5, 60


def _weak_dims_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five classes: dims 0-1 separate them cleanly, dims 2-15 weakly under heavy noise.

    With one support sample the noisy dims only hurt (1-shot saturates at m = 2); with nine,
    the class means average the noise out and the full 16 dims win (9-shot saturates at 16).
    """
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * np.arange(K) / K
    strong = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    weak = rng.normal(size=(K, 14))
    labels = np.repeat(np.arange(K), PER_CLASS)
    x = np.concatenate(
        [
            strong[labels] + 0.5 * rng.normal(size=(labels.size, 2)),
            weak[labels] + 1.4 * rng.normal(size=(labels.size, 14)),
        ],
        axis=1,
    )
    return x.astype(np.float32), labels


class _Rows(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.as_tensor(self.x[i]), int(self.y[i])


class _Identity(nn.Module):
    """The model contract over feature rows: embed is the identity."""

    def __init__(self, nesting: list[int], kind: str):
        super().__init__()
        self.nesting, self.kind, self.meta, self.config = nesting, kind, {}, {}
        self.fc = MRLHead(nesting, K)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class _Bundle:
    dataset: Dataset
    targets: np.ndarray
    fingerprint: str
    class_names: list[str]
    split: str = "test"


def _cache(tmp, name, x, y, nesting, kind="mrl"):
    bundle = _Bundle(_Rows(x, y), y, name, [f"c{i}" for i in range(K)])
    model = _Identity(nesting, kind)
    return embed_dataset(model, bundle, tmp / name, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("findings")
    x, y = _weak_dims_features()
    flat = x.copy()
    flat[:, :2] *= 20  # the clean dims dominate every size: nothing to gain past m = 2
    return {
        "MRL": _cache(tmp, "MRL", x, y, [2, 8, 16]),
        "FF-16": _cache(tmp, "FF-16", x, y, [16], kind="ff"),
        "flat": _cache(tmp, "flat", flat, y, [2, 8, 16], kind="mrl-e"),
    }


def test_saturation_finding_holds_when_more_shots_need_more_dims(caches):
    rows = findings(caches, queries=10, n_episodes=200, n_boot=200)
    assert len(rows) == 1
    row = rows[0]
    assert row["finding"] == "g" and row["claim"] == CLAIM_G
    # log2(16) - log2(2): three doublings; every replicate agrees on this clear case.
    assert row["value"] == 3.0 and row["ci_low"] == 3.0 and row["ci_high"] == 3.0
    assert row["threshold"] == 0.5 * np.log2(16 / 8) and row["verdict"] == HOLDS
    assert "MRL: 1-shot saturates at m = 2, 9-shot at m = 16" in row["effect"]
    assert list(findings_table(rows).columns)[:3] == ["finding", "claim", "effect"]


def test_saturation_finding_fails_when_every_shot_count_saturates_at_once(caches):
    (row,) = findings(caches, model="flat", queries=10, n_episodes=100, n_boot=100)
    assert row["value"] == 0.0 and row["ci_high"] == 0.0
    assert row["verdict"] == FAILS


def test_saturation_finding_is_unmeasured_without_a_nested_model_or_samples(caches):
    (row,) = findings({"FF-16": caches["FF-16"]})
    assert row["verdict"] == UNMEASURED and np.isnan(row["value"])
    assert "no MRL or MRL-E model" in row["reason"]
    (row,) = findings({"FF-16": caches["FF-16"]}, model="FF-16")
    assert row["verdict"] == UNMEASURED and "one size" in row["reason"]
    # 60 samples per class cannot hold 50 shots and 15 queries.
    (row,) = findings(caches, shots=(1, 50), n_episodes=10)
    assert row["verdict"] == UNMEASURED and "shots + queries" in row["reason"]
    with pytest.raises(ValueError, match="not among the caches"):
        findings(caches, model="nope")
    with pytest.raises(ValueError, match="two different counts"):
        findings(caches, shots=(5,))
