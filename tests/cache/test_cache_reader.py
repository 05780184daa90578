"""Reading a cache: the stored outputs, truncation, float16 precision, logits at any size,
class subsets."""

from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pytest
import torch
from cache_fakes import N, inputs, make_bundle, make_model, one_torch_thread

from mrl_analysis.cache.build import embed_dataset


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def mrl_cache(one_thread, tmp_path_factory):
    model, bundle = make_model("mrl"), make_bundle()
    cache = embed_dataset(
        model,
        bundle,
        tmp_path_factory.mktemp("c") / "mrl",
        batch_size=8,
        chunk_size=12,
        progress=False,
    )
    return cache, model, bundle


def test_cache_holds_the_model_outputs(mrl_cache):
    cache, model, bundle = mrl_cache
    x = inputs(bundle)
    with torch.inference_mode():
        feats, logits = model.embed(x).numpy(), model(x).numpy()
    assert cache.nesting == model.nesting and cache.kind == "mrl"
    assert cache.logits().dtype == np.float32 and cache.logits().shape == (10, N, 10)
    np.testing.assert_allclose(cache.logits(), logits, rtol=1e-5, atol=1e-5)
    # float16 storage: relative rounding error at most 2**-11, of features the cache computes
    # NHWC on the CPU (summation order: differences ~1e-6 of the largest value).
    np.testing.assert_allclose(cache.features(), feats, rtol=2**-11, atol=1e-5)
    np.testing.assert_array_equal(cache.predictions(), logits.argmax(2))
    probs = cache.probabilities()
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), 2), atol=1e-6)
    for i, m in enumerate(cache.nesting):
        np.testing.assert_allclose(cache.probabilities_at(m), probs[i], atol=1e-6)
    np.testing.assert_array_equal(cache.labels, bundle.targets)
    assert cache.sample_ids == bundle.sample_ids
    assert cache.class_names == bundle.class_names and cache.class_ids == bundle.class_ids
    assert cache.hierarchy == bundle.hierarchy

    m = cache.manifest
    assert isinstance(cache.logits(), np.memmap)  # lazy: nothing read until used
    assert m["arrays"]["features"]["dtype"] == "<f2" and m["arrays"]["logits"]["dtype"] == "<f4"
    assert m["dataset"] == {
        "name": "tiny",
        "split": "test",
        "fingerprint": "tiny-v1",
        "transform": "None",
        "num_samples": N,
        "class_subset": None,
    }
    assert m["model"]["checkpoint_hash_source"] == "state_dict"
    assert m["build"]["num_chunks"] == 2 and m["build"]["chunks_resumed"] == 0
    assert {"torch", "numpy", "python"} <= m["versions"].keys()
    assert all(len(a["sha256"]) == 64 for a in m["arrays"].values())
    cache.verify()


def test_features_truncate_and_normalize(mrl_cache):
    cache = mrl_cache[0]
    full = cache.features()
    assert full.shape == (N, 512) and full.dtype == np.float32
    np.testing.assert_array_equal(cache.features(8), full[:, :8])
    unit = cache.features(8, normalize=True)
    # Normalized after truncation, not truncated after normalizing.
    np.testing.assert_allclose(unit, full[:, :8] / np.linalg.norm(full[:, :8], axis=1)[:, None])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-6)
    for bad in (0, 513):
        with pytest.raises(ValueError, match="truncate_dim must lie in 1..512"):
            cache.features(bad)


def test_float16_features_keep_neighbours_and_predictions(tmp_path):
    model, bundle = make_model("mrl-e"), make_bundle(32)
    half = embed_dataset(model, bundle, tmp_path / "f16", progress=False)
    full = embed_dataset(model, bundle, tmp_path / "f32", progress=False, features_dtype="float32")
    assert half.manifest["precision"]["features_dtype"] == "float16"
    for m in half.nesting:
        exact = full.features(m, normalize=True)
        index = faiss.IndexFlatL2(m)
        index.add(exact)
        dist, nn = index.search(exact, 2)
        index = faiss.IndexFlatL2(m)
        index.add(half.features(m, normalize=True))
        _, nn_half = index.search(half.features(m, normalize=True), 2)
        assert (nn_half[:, 1] == nn[:, 1]).mean() >= 0.95
        # Where they differ, it is a near-tie: float16's neighbour is as close in float32.
        chosen = ((exact - exact[nn_half[:, 1]]) ** 2).sum(1)
        assert np.all(chosen <= dist[:, 1] + 1e-3)
        agree = half.logits_at(m).argmax(1) == full.logits_at(m).argmax(1)
        assert agree.mean() >= 0.98


def test_features_beyond_float16_range_are_kept_in_float32(tmp_path):
    model, bundle = make_model(), make_bundle(4)
    with torch.no_grad():
        model.backbone.layer4[-1].bn2.bias.add_(1e5)
    cache = embed_dataset(model, bundle, tmp_path / "c", progress=False)
    assert cache.manifest["precision"]["features_dtype"] == "float32"
    with torch.inference_mode():
        expected = model.embed(inputs(bundle)).numpy()
    assert expected.max() > 65504
    np.testing.assert_allclose(cache.features(), expected, rtol=1e-5)


def test_mrle_logits_at_untrained_size(tmp_path):
    model, bundle = make_model("mrl-e", nesting=[4, 16, 64, 512]), make_bundle(16)
    exact = embed_dataset(model, bundle, tmp_path / "f32", progress=False, features_dtype="float32")
    half = embed_dataset(model, bundle, tmp_path / "f16", progress=False)
    with torch.inference_mode():
        feats = model.embed(inputs(bundle))
        expected = model.logits_at(feats, 37).numpy()
    assert 37 not in model.nesting
    np.testing.assert_allclose(exact.logits_at(37), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(half.logits_at(37), expected, rtol=1e-2, atol=1e-3)
    for i, m in enumerate(exact.nesting):
        np.testing.assert_allclose(exact.logits_at(m), exact.logits()[i], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim"):
        exact.logits_at(513)
    weight, bias = exact.head()
    np.testing.assert_array_equal(weight, model.fc.nesting_classifier_0.weight.detach().numpy())
    np.testing.assert_array_equal(bias, model.fc.nesting_classifier_0.bias.detach().numpy())


def test_mrl_logits_at_only_trained_sizes(mrl_cache):
    cache = mrl_cache[0]
    np.testing.assert_array_equal(cache.logits_at(16), cache.logits()[cache.nesting.index(16)])
    with pytest.raises(ValueError, match="only MRL-E"):
        cache.logits_at(37)
    with pytest.raises(ValueError, match="no shared head"):
        cache.head()


@pytest.mark.parametrize("kind", ["mrl", "mrl-e"])
def test_class_subset_split_is_scored_among_its_classes(tmp_path, kind):
    """ImageNet-A/R style: labels come from 4 of the 10 classes, so only those can win."""
    model, plain_bundle = make_model(kind, nesting=[2, 8, 512]), make_bundle(16)
    subset = np.array([7, 1, 3, 5])
    bundle = replace(plain_bundle, class_subset_indices=subset, fingerprint="tiny-subset")
    full = embed_dataset(model, plain_bundle, tmp_path / "full", progress=False)
    cache = embed_dataset(model, bundle, tmp_path / "sub", progress=False)
    assert cache.manifest["dataset"]["class_subset"] == [1, 3, 5, 7]
    assert "class_subset" not in full.manifest["provenance"]  # ordinary keys unchanged
    outside = [0, 2, 4, 6, 8, 9]
    assert np.isneginf(cache.logits()[..., outside]).all()
    np.testing.assert_array_equal(
        cache.logits()[..., [1, 3, 5, 7]], full.logits()[..., [1, 3, 5, 7]]
    )
    expected = np.array([1, 3, 5, 7])[full.logits()[..., [1, 3, 5, 7]].argmax(axis=2)]
    np.testing.assert_array_equal(cache.predictions(), expected)
    probs = cache.probabilities()
    assert (probs[..., outside] == 0).all() and np.allclose(probs.sum(axis=2), 1, atol=1e-5)
    m = 8 if kind == "mrl" else 5  # MRL-E: also a size between the trained ones
    assert np.isneginf(cache.logits_at(m)[:, outside]).all()
    bad = replace(plain_bundle, class_subset_indices=np.array([3, 10]), fingerprint="bad")
    with pytest.raises(ValueError, match="class_subset_indices go up to 10 but the model has 10"):
        embed_dataset(model, bad, tmp_path / "bad", progress=False)
