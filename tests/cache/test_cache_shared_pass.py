"""One pass over the data for several caches: models and flipped inputs share each batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cache_fakes import SMALL, instrument, make_bundle, make_model, one_torch_thread
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from mrl_analysis.cache.build import EmbedTarget, embed_dataset, embed_many
from mrl_analysis.cache.experiment import build_caches, build_flipped_caches
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import build_model

FLIP = v2.RandomHorizontalFlip(p=1.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


class Counting(Dataset):
    """A dataset that counts how often each item is read."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.inner[i]


def _same_arrays(a, b) -> None:
    np.testing.assert_array_equal(a.features(), b.features(), strict=True)
    np.testing.assert_array_equal(a.logits(), b.logits(), strict=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.sample_ids == b.sample_ids


def test_models_and_flipped_inputs_share_one_read_of_each_sample(tmp_path):
    bundle = make_bundle(24)
    bundle.dataset = Counting(bundle.dataset)
    flipped = make_bundle(24, transform=FLIP)  # what a flipped split is, read on its own
    mrl, ff = make_model(seed=0), make_model(kind="ff", seed=1)
    targets = [
        EmbedTarget(mrl, tmp_path / "mrl" / "test"),
        EmbedTarget(mrl, tmp_path / "mrl" / "hflip", bundle=flipped, view=lambda x: x.flip(-1)),
        EmbedTarget(ff, tmp_path / "ff" / "test"),
    ]
    caches = embed_many(bundle, targets, **SMALL)
    assert bundle.dataset.reads == 24, "each sample is read once for all three caches"
    assert [c.path for c in caches] == [t.cache_dir for t in targets]
    assert caches[0].manifest["build"]["shared_pass"] == 3

    # Each cache is the one a pass of its own makes, bit for bit, under the same key.
    alone = [
        embed_dataset(make_model(seed=0), make_bundle(24), tmp_path / "a0", **SMALL),
        embed_dataset(make_model(seed=0), flipped, tmp_path / "a1", **SMALL),
        embed_dataset(make_model(kind="ff", seed=1), make_bundle(24), tmp_path / "a2", **SMALL),
    ]
    for shared, own in zip(caches, alone, strict=True):
        _same_arrays(shared, own)
        assert shared.manifest["key"] == own.manifest["key"]
    assert not np.array_equal(caches[0].features(), caches[1].features())


def test_a_pass_computes_only_what_each_cache_still_needs(tmp_path):
    bundle = make_bundle(24)
    first, second = make_model(seed=0), make_model(seed=1)
    embed_dataset(first, bundle, tmp_path / "one", **SMALL)
    seen_first, seen_second = instrument(first), instrument(second)
    bundle.dataset = Counting(bundle.dataset)
    targets = [EmbedTarget(first, tmp_path / "one"), EmbedTarget(second, tmp_path / "two")]
    reused, built = embed_many(bundle, targets, **SMALL)
    assert sum(seen_first) == 0, "an up-to-date cache was computed again"
    assert sum(seen_second) == 24 and bundle.dataset.reads == 24
    assert built.manifest["build"]["shared_pass"] == 1
    assert reused.manifest["build"]["shared_pass"] == 1


def test_a_view_needs_its_own_bundle_of_the_same_samples(tmp_path):
    model, bundle = make_model(), make_bundle(8)
    with pytest.raises(ValueError, match="needs the bundle the view makes"):
        embed_many(bundle, [EmbedTarget(model, tmp_path / "c", view=lambda x: x)], **SMALL)
    other = make_bundle(8)
    other.sample_ids = list(reversed(other.sample_ids))
    with pytest.raises(ValueError, match="other samples or labels"):
        embed_many(bundle, [EmbedTarget(model, tmp_path / "c", bundle=other, view=FLIP)], **SMALL)
    with pytest.raises(ValueError, match="share a cache_dir"):
        embed_many(bundle, [EmbedTarget(model, tmp_path / "c")] * 2, **SMALL)


def test_build_caches_makes_the_flipped_split_in_the_plain_pass(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "test" / cls / f"{i}.png")
    models = {}
    for seed, name in enumerate(("M", "N")):
        torch.manual_seed(seed)
        model = build_model("resnet18", 2, "mrl", [2, 512], in_channels=3)
        models[name] = save_checkpoint(
            tmp_path / f"{name}.pt", model, class_names=["a", "b"], meta={"classes": ["a", "b"]}
        )
    common = {"data_root": tmp_path / "data", "progress": False}
    both = build_caches(
        models, "folder", ["test"], hflip_splits=["test"], cache_root=tmp_path / "one", **common
    )
    assert {name: sorted(per) for name, per in both.items()} == {
        "M": ["test", "test-hflip"],
        "N": ["test", "test-hflip"],
    }
    assert both["M"]["test"].manifest["build"]["shared_pass"] == 4
    # The flipped caches are those a separate flipped pass makes (notebook 03 reuses them).
    apart = build_flipped_caches(models, "folder", ["test"], cache_root=tmp_path / "two", **common)
    assert sorted(apart["M"]) == ["test-hflip"]
    for name in models:
        _same_arrays(both[name]["test-hflip"], apart[name]["test-hflip"])
        assert both[name]["test-hflip"].manifest["key"] == apart[name]["test-hflip"].manifest["key"]
