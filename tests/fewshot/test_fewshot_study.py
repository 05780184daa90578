"""Cache-level glue of the few-shot and FLUID studies, on caches of hand-made features."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.experiment import trained_classes
from mrl_analysis.fewshot.episodes import fewshot_accuracy
from mrl_analysis.fewshot.fluid import evaluate_fluid
from mrl_analysis.fewshot.stream import make_stream
from mrl_analysis.fewshot.study import (
    FewshotSpec,
    FluidSpec,
    class_split,
    fewshot_table,
    fluid_study,
    novel_fewshot,
    pretrain_novel_labels,
    sizes_from,
    study_caches,
)
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import MRLHead, build_model

CLASS_IDS = ["cat", "dog", "car", "bus", "owl", "elk"]
PER_CLASS = 24


def _features(seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Six classes in 4 dims: coordinate 0 alone separates only {0,1,2} from {3,4,5}.

    Values are multiples of 1/8, exact in the caches' float16.
    """
    rng = np.random.default_rng(seed)
    centres = np.array(
        [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [-1, 1, 0, 0], [-1, 0, 1, 0], [-1, 0, 0, 1]]
    )
    labels = np.repeat(np.arange(len(CLASS_IDS)), PER_CLASS)
    noise = np.round(rng.normal(0, scale, (labels.size, 4)) * 8) / 8
    return (4 * centres[labels] + noise).astype(np.float32), labels


class RowSet(Dataset):
    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.as_tensor(self.features[i]), int(self.labels[i])


class RowModel(nn.Module):
    """The model contract over hand-made feature rows: embed is the identity."""

    def __init__(self, nesting: list[int], n_classes: int, kind: str = "mrl"):
        super().__init__()
        self.nesting, self.kind, self.meta, self.config = nesting, kind, {}, {}
        self.fc = MRLHead(nesting, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class Bundle:
    dataset: Dataset
    targets: np.ndarray
    fingerprint: str
    class_names: list[str]
    class_ids: list[str]
    split: str = "test"
    transform: object = None


def _cache(tmp, name, features, labels, nesting, split="test"):
    bundle = Bundle(
        dataset=RowSet(features, labels),
        targets=labels,
        fingerprint=f"{name}-{split}",
        class_names=[c.title() for c in CLASS_IDS],
        class_ids=CLASS_IDS,
        split=split,
    )
    model = RowModel(nesting, len(CLASS_IDS))
    return embed_dataset(model, bundle, tmp / name / split, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caches")
    out = {}
    for name, nesting, seed in (("MRL", [1, 2, 4], 0), ("FF-4", [4], 1)):
        test = _features(seed, 0.5)
        train = _features(seed + 10, 0.5)
        out[name] = {
            "test": _cache(tmp, name, *test, nesting),
            "train": _cache(tmp, name, *train, nesting, split="train"),
        }
    return out


def test_fewshot_table_matches_the_array_function(caches):
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    spec = FewshotSpec(
        shots=(1, 3), ways=(3, None), n_episodes=40, all_classes_episodes=10, queries=5
    )
    table = fewshot_table(evals, spec, progress=False)
    assert sorted(table["ways"].unique()) == [3, 6]
    assert set(table.loc[table.ways == 3, "episodes"]) == {40}
    assert set(table.loc[table.ways == 6, "episodes"]) == {10}
    mrl = table[table.model == "MRL"].sort_values(["shots", "ways", "truncate_dim"])
    cache = evals["MRL"]
    direct = pd.concat(
        [
            fewshot_accuracy(
                cache.features(),
                cache.labels,
                [1, 2, 4],
                shots=(1, 3),
                ways=[k],
                n_episodes=e,
                queries=5,
                model="MRL",
                progress=False,
            )
            for k, e in ((3, 40), (None, 10))
        ]
    ).sort_values(["shots", "ways", "truncate_dim"])
    np.testing.assert_allclose(mrl["accuracy"].to_numpy(), direct["accuracy"].to_numpy())
    # The classes are apart in 4 dims but coordinate 0 mixes three of them.
    six = mrl[(mrl.ways == 6) & (mrl.shots == 3)].set_index("truncate_dim")["accuracy"]
    assert six[4] > 0.95 and six[1] < 0.6
    assert table[table.model == "FF-4"]["truncate_dim"].unique().tolist() == [4]


def test_fewshot_table_on_a_class_subset_counts_its_classes(caches):
    evals = {"MRL": caches["MRL"]["test"]}
    subset = [0, 3, 5]
    spec = FewshotSpec(shots=(1,), ways=(2, 3, None), n_episodes=5, all_classes_episodes=2)
    table = fewshot_table(evals, spec, classes=subset, progress=False)
    # 3-way is every class of the subset: evaluated once, with the all-classes episodes.
    assert table.groupby("ways")["episodes"].unique().map(list).to_dict() == {2: [5], 3: [2]}
    assert len(table) == 2 * 3
    with pytest.raises(ValueError, match="no caches"):
        fewshot_table({})


def test_min_dim_skips_the_smallest_sizes(caches):
    evals = {"MRL": caches["MRL"]["test"], "FF-4": caches["FF-4"]["test"]}
    assert sizes_from(evals["MRL"], 2) == [2, 4]
    spec = FewshotSpec(shots=(1,), ways=(3,), n_episodes=5, min_dim=2)
    table = fewshot_table(evals, spec, progress=False)
    assert sorted(table["truncate_dim"].unique()) == [2, 4]
    with pytest.raises(ValueError, match=r"FF-4 has no size >= min_dim=8 \(its nesting: \[4\]\)"):
        fewshot_table({"FF-4": evals["FF-4"]}, replace(spec, min_dim=8), progress=False)


def _checkpoint(path, classes, dataset="folder"):
    torch.manual_seed(0)
    model = build_model("resnet18", len(classes), "mrl", [2, 512], in_channels=3)
    meta = {"dataset": dataset, "classes": list(classes)}
    return save_checkpoint(path, model, class_names=list(classes), meta=meta)


def test_pretrain_novel_labels_from_checkpoints(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", ["dog", "cat", "owl"])
    b = _checkpoint(tmp_path / "b.pt", ["cat", "owl", "dog"])
    assert trained_classes(a) == ["dog", "cat", "owl"]
    pretrain, novel = pretrain_novel_labels(CLASS_IDS, {"A": a, "B": b})
    np.testing.assert_array_equal(pretrain, [0, 1, 4])
    np.testing.assert_array_equal(novel, [2, 3, 5])
    c = _checkpoint(tmp_path / "c.pt", ["cat", "owl"])
    with pytest.raises(ValueError, match="same class subset"):
        pretrain_novel_labels(CLASS_IDS, {"A": a, "C": c})
    everything = _checkpoint(tmp_path / "all.pt", CLASS_IDS)
    with pytest.raises(ValueError, match="none is novel"):
        pretrain_novel_labels(CLASS_IDS, {"all": everything})


def test_fewshot_spec_validates_and_freezes():
    spec = FewshotSpec(shots=[1, 5], ways=[5, None])
    assert spec.shots == (1, 5) and spec.ways == (5, None)
    with pytest.raises(TypeError, match="shots must be an integer"):
        FewshotSpec(shots=[1.5])
    with pytest.raises(ValueError, match="ways must lie in 2.."):
        FewshotSpec(ways=[1])
    with pytest.raises(ValueError, match="metric"):
        FewshotSpec(metric="manhattan")
    with pytest.raises(ValueError, match="at least one value"):
        FewshotSpec(shots=[])
    with pytest.raises(ValueError, match="head_threshold"):
        FluidSpec(head_threshold=0)


def test_class_split_and_novel_fewshot(caches, tmp_path):
    ckpt = _checkpoint(tmp_path / "a.pt", ["dog", "cat", "owl"])
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    split = class_split(evals, {"MRL": ckpt})
    np.testing.assert_array_equal(split.pretrain, [0, 1, 4])
    np.testing.assert_array_equal(split.novel, [2, 3, 5])
    assert split.table()["names"].tolist() == ["Cat, Dog, Owl", "Car, Bus, Elk"]
    # The same cache stands in for the class-subset model and its all-classes twin.
    spec = FewshotSpec(shots=(1, 2), ways=(2, 3, None), n_episodes=6, queries=4, min_dim=2)
    novel = novel_fewshot({"MRL": evals["MRL"]}, evals, split, spec, progress=False)
    assert novel.twins == {"MRL (3 classes)": "MRL (all 6 classes)"}
    table = novel.table
    assert set(table["model"]) == {"MRL (3 classes)", "MRL (all 6 classes)"}
    # 3-way is all three novel classes: dropped as a fixed way count, kept as "all".
    assert sorted(table["ways"].unique()) == [2, 3]
    a, b = (
        table[table.model == m].reset_index(drop=True)
        for m in ("MRL (3 classes)", "MRL (all 6 classes)")
    )
    pd.testing.assert_series_equal(a["accuracy"], b["accuracy"])
    direct = fewshot_table(
        {"X": evals["MRL"]}, replace(spec, ways=(2, None)), classes=[2, 3, 5], progress=False
    )
    np.testing.assert_allclose(a["accuracy"], direct["accuracy"])
    with pytest.raises(ValueError, match="leave nothing to evaluate"):
        novel_fewshot({"MRL": evals["MRL"]}, evals, split, replace(spec, ways=(3,)))


def test_fluid_study_runs_one_stream_through_every_model(caches):
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    trains = {name: per_split["train"] for name, per_split in caches.items()}
    pretrain, novel = [0, 2, 4], [1, 3, 5]
    spec = FluidSpec(alpha=1.0, head_threshold=0.1, seed=3, min_dim=2)
    study = fluid_study(evals, trains, pretrain, novel, spec, progress=False)
    expected = make_stream(evals["MRL"].labels, pretrain, novel, alpha=1.0, seed=3)
    np.testing.assert_array_equal(study.stream.indices, expected.indices)
    assert study.head_threshold == pytest.approx(0.1 * len(expected))
    for name in ("MRL", "FF-4"):
        cache = evals[name]
        table, curve = evaluate_fluid(
            cache.features(),
            expected,
            sizes_from(cache, 2),
            init_features=trains[name].features(),
            init_labels=trains[name].labels,
            head_threshold=0.1,
            model=name,
            seed=3,  # the spec's seed also seeds the bootstrap
            progress=False,
        )
        got = study.accuracy[study.accuracy.model == name].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, table)
        pd.testing.assert_frame_equal(
            study.curves[study.curves.model == name].reset_index(drop=True), curve
        )
    assert study.classes["name"].tolist() == [c.title() for c in CLASS_IDS]
    assert study.init_samples == 3 * PER_CLASS  # the train split's samples of [0, 2, 4]
    assert study.classes["count"].sum() == len(expected)
    assert set(study.classes["origin"]) == {"pretrain", "novel"}


def test_fluid_study_refuses_mismatched_caches(caches, tmp_path):
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    with pytest.raises(ValueError, match=r"no training-split cache for \['FF-4'\]"):
        fluid_study(evals, {"MRL": caches["MRL"]["train"]}, [0, 1, 2], [3, 4, 5])
    features, labels = _features(5, 0.5)
    order = np.random.default_rng(0).permutation(labels.size)
    shuffled = _cache(tmp_path, "shuffled", features[order], labels[order], [4])
    trains = {"MRL": caches["MRL"]["train"], "X": caches["FF-4"]["train"]}
    with pytest.raises(ValueError, match="X's evaluation cache holds other samples than MRL's"):
        fluid_study({"MRL": evals["MRL"], "X": shuffled}, trains, [0, 1, 2], [3, 4, 5])
    with pytest.raises(ValueError, match="no caches"):
        fluid_study({}, {}, [0], [1])


def test_study_caches_builds_every_cache_it_reads(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog", "car"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.png")
    full = _checkpoint(tmp_path / "full.pt", ["car", "cat", "dog"])
    subset = _checkpoint(tmp_path / "subset.pt", ["dog", "car"])
    caches = study_caches(
        {"MRL": full},
        {"MRL": subset},
        "folder",
        cache_root=tmp_path / "cache",
        data_root=tmp_path / "data",
        progress=False,
    )
    assert list(caches.evals) == ["MRL"] and caches.kinds == {"MRL": "mrl"}
    assert caches.evals["MRL"].manifest["dataset"]["split"] == "test"
    assert caches.novel_trains["MRL"].manifest["dataset"]["split"] == "train"
    assert caches.novel_evals["MRL"].path != caches.evals["MRL"].path
    assert caches.novel_evals["MRL"].logits().shape[2] == 2
    np.testing.assert_array_equal(caches.classes.pretrain, [0, 2])  # car, dog
    np.testing.assert_array_equal(caches.classes.novel, [1])
