"""Cache-level glue of the few-shot and FLUID studies, on caches of hand-made features."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.experiment import build_caches
from mrl_analysis.fewshot.episodes import fewshot_accuracy
from mrl_analysis.fewshot.fluid import evaluate_fluid, make_stream
from mrl_analysis.fewshot.study import (
    build_subset_caches,
    class_labels,
    fewshot_table,
    fluid_study,
    pretrain_novel_labels,
    sizes_from,
    subset_cache_name,
    trained_classes,
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


def test_class_labels_keep_the_requested_order():
    np.testing.assert_array_equal(class_labels(CLASS_IDS, ["bus", "cat"]), [3, 0])
    with pytest.raises(ValueError, match=r"\['fox'\] are not among"):
        class_labels(CLASS_IDS, ["cat", "fox"])


def test_fewshot_table_matches_the_array_function(caches):
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    table = fewshot_table(
        evals, shots=(1, 3), ways=(3, None), n_episodes=40, all_classes_episodes=10, queries=5
    )
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
    assert six[4] > 95 and six[1] < 60
    assert table[table.model == "FF-4"]["truncate_dim"].unique().tolist() == [4]


def test_fewshot_table_on_a_class_subset_counts_its_classes(caches):
    evals = {"MRL": caches["MRL"]["test"]}
    subset = [0, 3, 5]
    table = fewshot_table(
        evals, shots=(1,), ways=(2, 3, None), n_episodes=5, all_classes_episodes=2, classes=subset
    )
    # 3-way is every class of the subset: evaluated once, with the all-classes episodes.
    assert table.groupby("ways")["episodes"].unique().map(list).to_dict() == {2: [5], 3: [2]}
    assert len(table) == 2 * 3
    with pytest.raises(ValueError, match="no caches"):
        fewshot_table({})


def test_min_dim_skips_the_smallest_sizes(caches):
    evals = {"MRL": caches["MRL"]["test"], "FF-4": caches["FF-4"]["test"]}
    assert sizes_from(evals["MRL"], 2) == [2, 4]
    table = fewshot_table(evals, shots=(1,), ways=(3,), n_episodes=5, min_dim=2)
    assert sorted(table["truncate_dim"].unique()) == [2, 4]
    with pytest.raises(ValueError, match=r"FF-4 has no size >= min_dim=8 \(its nesting: \[4\]\)"):
        fewshot_table({"FF-4": evals["FF-4"]}, shots=(1,), ways=(3,), n_episodes=5, min_dim=8)


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


def test_subset_caches_cover_every_class(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "test" / cls / f"{i}.png")
    ckpt = _checkpoint(tmp_path / "m.pt", ["a", "c"])
    common = {"cache_root": tmp_path / "cache", "data_root": tmp_path / "data", "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = build_subset_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test"]
    assert cache.path == tmp_path / "cache" / subset_cache_name("M", ["c", "a"]) / "folder-test"
    np.testing.assert_array_equal(cache.labels, [0, 0, 1, 1, 2, 2])
    assert cache.logits().shape == (2, 6, 2)
    assert cache.class_ids == ["a", "b", "c"]
    # build_caches warns, and its cache for the same display name lives elsewhere.
    with pytest.warns(UserWarning, match="bundle names 3 classes but the model has 2"):
        plain = build_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test"]
    assert plain.path != cache.path
    stray = _checkpoint(tmp_path / "stray.pt", ["a", "z"])
    with pytest.raises(ValueError, match=r"\['z'\] are not among"):
        build_subset_caches({"S": stray}, "folder", ["test"], **common)
    other = _checkpoint(tmp_path / "other.pt", ["a", "c"], dataset="cifar100")
    with pytest.raises(ValueError, match="trained on 'cifar100'"):
        build_subset_caches({"O": other}, "folder", ["test"], **common)
    with pytest.raises(FileNotFoundError, match="checkpoints not found"):
        build_subset_caches({"X": tmp_path / "missing.pt"}, "folder", ["test"], **common)


def test_fluid_study_runs_one_stream_through_every_model(caches):
    evals = {name: per_split["test"] for name, per_split in caches.items()}
    trains = {name: per_split["train"] for name, per_split in caches.items()}
    pretrain, novel = [0, 2, 4], [1, 3, 5]
    study = fluid_study(
        evals, trains, pretrain, novel, alpha=1.0, head_threshold=0.1, seed=3, min_dim=2
    )
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
            progress=False,
        )
        got = study.accuracy[study.accuracy.model == name].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, table)
        pd.testing.assert_frame_equal(
            study.curves[study.curves.model == name].reset_index(drop=True), curve
        )
    assert study.classes["name"].tolist() == [c.title() for c in CLASS_IDS]
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
