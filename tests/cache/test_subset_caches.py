"""Caches of class-subset models over every class: the mapping is declared, not warned about."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from cache_fakes import make_bundle, make_model
from PIL import Image

from mrl_analysis.cache.build import ClassMismatchError, embed_dataset
from mrl_analysis.cache.experiment import (
    build_caches,
    build_subset_caches,
    class_labels,
    subset_cache_name,
    trained_classes,
)
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import build_model


def _checkpoint(path, classes, dataset="folder"):
    torch.manual_seed(0)
    model = build_model("resnet18", len(classes), "mrl", [2, 512], in_channels=3)
    meta = {"dataset": dataset, "classes": list(classes)}
    return save_checkpoint(path, model, class_names=list(classes), meta=meta)


def test_class_labels_keep_the_requested_order():
    ids = ["cat", "dog", "car", "bus"]
    np.testing.assert_array_equal(class_labels(ids, ["bus", "cat"]), [3, 0])
    with pytest.raises(ValueError, match=r"\['fox'\] are not among"):
        class_labels(ids, ["cat", "fox"])


def test_subset_caches_cover_every_class(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "test" / cls / f"{i}.png")
    ckpt = _checkpoint(tmp_path / "m.pt", ["c", "a"])
    assert trained_classes(ckpt) == ["c", "a"]
    common = {"cache_root": tmp_path / "cache", "data_root": tmp_path / "data", "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the subset is declared: nothing to warn about
        cache = build_subset_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test"]
    assert cache.path == tmp_path / "cache" / subset_cache_name("M", ["a", "c"]) / "folder-test"
    np.testing.assert_array_equal(cache.labels, [0, 0, 1, 1, 2, 2])
    assert cache.logits().shape == (2, 6, 2)
    assert cache.class_ids == ["a", "b", "c"]
    # Output 0 is class "c" (label 2), output 1 class "a" (label 0).
    assert cache.manifest["logit_classes"] == [2, 0]
    # build_caches declares no mapping: a model of 2 of the 3 classes is refused, by name.
    with pytest.raises(ClassMismatchError, match=r"dataset's \['b'\] are not among"):
        build_caches({"M": ckpt}, "folder", ["test"], **common)
    assert not (tmp_path / "cache" / "M").exists(), "a refused model leaves no cache"
    stray = _checkpoint(tmp_path / "stray.pt", ["a", "z"])
    with pytest.raises(ValueError, match=r"\['z'\] are not among"):
        build_subset_caches({"S": stray}, "folder", ["test"], **common)
    other = _checkpoint(tmp_path / "other.pt", ["a", "c"], dataset="cifar100")
    with pytest.raises(ValueError, match="trained on 'cifar100'"):
        build_subset_caches({"O": other}, "folder", ["test"], **common)
    with pytest.raises(FileNotFoundError, match="checkpoints not found"):
        build_subset_caches({"X": tmp_path / "missing.pt"}, "folder", ["test"], **common)


def test_embed_dataset_checks_the_declared_logit_classes(tmp_path):
    model, bundle = make_model(), make_bundle(8)
    order = list(range(9, -1, -1))
    cache = embed_dataset(model, bundle, tmp_path / "c", logit_classes=order, progress=False)
    assert cache.manifest["logit_classes"] == order
    with pytest.raises(ValueError, match="distinct"):
        embed_dataset(model, bundle, tmp_path / "d", logit_classes=[0, 0, 1], progress=False)
    with pytest.raises(ValueError, match="one label of the bundle's 10 classes to each"):
        embed_dataset(model, bundle, tmp_path / "e", logit_classes=[0, 1, 2], progress=False)
    assert not (tmp_path / "e").exists(), "a rejected declaration installs no cache"
