"""Embedding cache: contents, reuse, staleness, atomicity, resume, concurrency, checksums.

The subprocess tests import this module (``make_bundle``, ``make_model``, ``instrument``)
so that the killed / racing processes build exactly the same model and data.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import open_cache
from mrl_analysis.cache.store import CacheCorruptedError, cache_path, install
from mrl_analysis.models.network import build_model

ROOT = Path(__file__).resolve().parents[1]
N = 24
SMALL = {"batch_size": 4, "chunk_size": 8, "progress": False}


class ImageSet(Dataset):
    """Random 1x28x28 images with a transform applied on access, like a torchvision set."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None, fail_at=None):
        self.images, self.labels, self.transform, self.fail_at = images, labels, transform, fail_at

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise KeyboardInterrupt  # a Ctrl-C arriving in the middle of an extraction
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])


@dataclass
class TinyBundle:
    """The documented DatasetBundle fields, filled by hand."""

    dataset: Any
    targets: np.ndarray
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    sample_ids: list[str]
    transform: Any
    fingerprint: str
    split: str = "test"
    boxes: np.ndarray | None = None
    class_subset_indices: np.ndarray | None = None
    in_channels: int = 1
    image_size: int = 28
    name: str = "tiny"
    extra: dict = field(default_factory=dict)


def make_bundle(n=N, *, transform=None, fingerprint="tiny-v1", fail_at=None) -> TinyBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TinyBundle(
        dataset=ImageSet(images, labels, transform, fail_at),
        targets=labels.numpy().astype(np.int64),
        class_names=[f"class {i}" for i in range(10)],
        class_ids=[f"c{i}" for i in range(10)],
        hierarchy={f"c{i}": "even" if i % 2 == 0 else "odd" for i in range(10)},
        sample_ids=[f"test/{i}" for i in range(n)],
        transform=transform,
        fingerprint=fingerprint,
    )


def make_model(kind="mrl", seed=0, nesting=None):
    torch.manual_seed(seed)
    return build_model("resnet18", 10, kind, nesting, in_channels=1).eval()


def instrument(model, delay: float = 0.0) -> list[int]:
    """Record the batch sizes ``model.embed`` sees, optionally slowing each batch down."""
    seen: list[int] = []
    embed = model.embed

    def observed(x):
        seen.append(len(x))
        time.sleep(delay)
        return embed(x)

    model.embed = observed
    return seen


def inputs(bundle: TinyBundle) -> torch.Tensor:
    return torch.stack([bundle.dataset[i][0] for i in range(len(bundle.dataset))])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.is_dir())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny batches gain nothing from more threads, and on a busy machine OpenMP's spinning
    # threads make them many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    # float16 storage: relative rounding error at most 2**-11.
    np.testing.assert_allclose(cache.features(), feats, rtol=2**-11, atol=1e-7)
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
        with pytest.raises(ValueError, match="truncate_dim must be in 1..512"):
            cache.features(bad)


def test_float16_features_keep_neighbours_and_predictions(tmp_path):
    model, bundle = make_model("mrl-e"), make_bundle(32)
    half = embed_dataset(model, bundle, tmp_path / "f16", progress=False)
    full = embed_dataset(model, bundle, tmp_path / "f32", progress=False, features_dtype="float32")
    assert half.manifest["precision"]["features_dtype"] == "float16"
    import faiss  # here, not at the top: the worker subprocesses import this module

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


def test_second_call_reuses_the_cache(tmp_path):
    model, bundle = make_model(), make_bundle(8)
    seen = instrument(model)
    first = embed_dataset(model, bundle, tmp_path / "c", batch_size=4, progress=False)
    assert sum(seen) == 8
    mtime = (tmp_path / "c" / "manifest.json").stat().st_mtime_ns
    second = embed_dataset(model, bundle, tmp_path / "c", batch_size=4, progress=False)
    assert sum(seen) == 8, "the second call ran the model again"
    assert second.manifest["build_id"] == first.manifest["build_id"]
    assert (tmp_path / "c" / "manifest.json").stat().st_mtime_ns == mtime


def test_changed_weights_make_the_cache_stale(tmp_path):
    model, bundle = make_model(), make_bundle(8)
    old = embed_dataset(model, bundle, tmp_path / "c", progress=False)
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2)
    seen = instrument(model)
    new = embed_dataset(model, bundle, tmp_path / "c", progress=False)
    assert sum(seen) == 8
    assert new.manifest["key"] != old.manifest["key"]
    with torch.inference_mode():
        expected = model.fc(model.embed(inputs(bundle))).numpy()
    np.testing.assert_allclose(open_cache(tmp_path / "c").logits(), expected, rtol=1e-5, atol=1e-5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("change", ["transform", "fingerprint"])
def test_changed_transform_or_dataset_make_the_cache_stale(tmp_path, change):
    model = make_model()
    before = make_bundle(8, transform=transforms.Normalize((0.5,), (0.5,)))
    embed_dataset(model, before, tmp_path / "c", progress=False)
    after = (
        make_bundle(8, transform=transforms.Normalize((0.5,), (0.25,)))
        if change == "transform"
        else make_bundle(8, transform=before.transform, fingerprint="tiny-v2")
    )
    seen = instrument(model)
    cache = embed_dataset(model, after, tmp_path / "c", progress=False)
    assert sum(seen) == 8
    assert cache.manifest["dataset"]["transform"] == repr(after.transform)
    assert cache.manifest["dataset"]["fingerprint"] == after.fingerprint
    with torch.inference_mode():
        expected = model.fc(model.embed(inputs(after))).numpy()
    np.testing.assert_allclose(cache.logits(), expected, rtol=1e-5, atol=1e-5)


def test_failure_mid_build_keeps_the_previous_cache_and_resumes(tmp_path):
    target = tmp_path / "c"
    good = embed_dataset(make_model(seed=0), make_bundle(), target, progress=False)
    good_features = good.features()

    model = make_model(seed=1)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(model, make_bundle(fail_at=N - 3), target, **SMALL)
    kept = open_cache(target)
    assert kept.manifest["build_id"] == good.manifest["build_id"]
    kept.verify()
    np.testing.assert_array_equal(kept.features(), good_features)
    assert not [p for p in tmp_path.glob(".*/manifest.json")], "a temp dir looks complete"
    assert len(list(tmp_path.glob(".c.partial-*/chunk-*.npz"))) == 2

    seen = instrument(model)
    resumed = embed_dataset(model, make_bundle(), target, **SMALL)
    assert sum(seen) == 8, "finished chunks were recomputed"
    assert resumed.manifest["build"]["chunks_resumed"] == 2
    with torch.inference_mode():
        expected = model.fc(model.embed(inputs(make_bundle()))).numpy()
    np.testing.assert_allclose(resumed.logits(), expected, rtol=1e-5, atol=1e-5)
    assert leftovers(tmp_path) == []


WORKER = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_cache import instrument, make_bundle, make_model
from mrl_analysis.cache.build import embed_dataset

args = json.loads(sys.argv[2])
model, bundle = make_model(), make_bundle(args["n"])
seen = instrument(model, delay=args["delay"])
print("ready", flush=True)
go = Path(args["go"])
while not go.exists():
    time.sleep(0.005)
t0 = time.time()
cache = embed_dataset(model, bundle, args["dir"], batch_size=4, chunk_size=8, progress=False)
print(json.dumps({"seen": sum(seen), "t0": t0, "t1": time.time(),
                  "build_id": cache.manifest["build_id"]}), flush=True)
"""


def start_workers(tmp_path: Path, count: int, **args) -> list[subprocess.Popen]:
    """Start ``count`` workers and wait until each has imported everything."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(Path(__file__).parent), json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(count)
    ]
    for proc in procs:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
    return procs


def test_resume_after_sigkill(tmp_path):
    target, go = tmp_path / "c", tmp_path / "go"
    (proc,) = start_workers(tmp_path, 1, n=32, delay=0.4, dir=str(target), go=str(go))
    go.touch()
    deadline = time.time() + 60
    while len(list(tmp_path.glob(".c.partial-*/chunk-*.npz"))) < 2:
        assert proc.poll() is None, f"worker ended before it was killed: {proc.stderr.read()}"
        assert time.time() < deadline, "no chunk landed within 60 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(tmp_path.glob(".c.partial-*/chunk-*.npz")))
    assert 2 <= done < 4
    with pytest.raises(FileNotFoundError, match="not a complete embedding cache|no embedding"):
        open_cache(target)

    model = make_model()
    seen = instrument(model)
    resumed = embed_dataset(model, make_bundle(32), target, **SMALL)
    assert sum(seen) == 32 - 8 * done, "finished chunks were recomputed"
    assert resumed.manifest["build"]["chunks_resumed"] == done
    resumed.verify()

    reference = embed_dataset(make_model(), make_bundle(32), tmp_path / "ref", **SMALL)
    np.testing.assert_allclose(resumed.logits(), reference.logits(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(resumed.features(), reference.features(), rtol=2e-3, atol=1e-6)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    assert resumed.sample_ids == reference.sample_ids
    assert leftovers(tmp_path) == []


def test_two_processes_build_the_cache_once(tmp_path):
    target, go = tmp_path / "c", tmp_path / "go"
    procs = start_workers(tmp_path, 2, n=16, delay=0.2, dir=str(target), go=str(go))
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["seen"] for r in results) == [0, 16], "exactly one process computes"
    assert max(r["t0"] for r in results) < min(r["t1"] for r in results), "calls did not overlap"
    assert len({r["build_id"] for r in results}) == 1
    open_cache(target).verify()
    assert leftovers(tmp_path) == []


def test_corruption_is_detected(tmp_path, caplog):
    target = tmp_path / "c"
    embed_dataset(make_model(), make_bundle(8), target, progress=False)
    logits_file = target / "logits.npy"
    data = bytearray(logits_file.read_bytes())
    data[-5] ^= 0xFF
    logits_file.write_bytes(bytes(data))
    cache = open_cache(target)  # same size and header: only the checksum can tell
    with pytest.raises(CacheCorruptedError, match=r"logits\.npy.*sha256.*delete"):
        cache.verify()
    # Asked again, embed_dataset checks the checksums and rebuilds rather than reuse it.
    with caplog.at_level(logging.WARNING, logger="mrl_analysis.cache.build"):
        rebuilt = embed_dataset(make_model(), make_bundle(8), target, progress=False)
    assert "replacing the corrupted cache" in caplog.text and "logits.npy" in caplog.text
    rebuilt.verify()

    features_file = target / "features.npy"
    features_file.write_bytes(features_file.read_bytes()[:-10])
    with pytest.raises(CacheCorruptedError, match=r"features\.npy.*bytes.*delete"):
        open_cache(target)
    # embed_dataset replaces a damaged cache instead of returning it.
    rebuilt = embed_dataset(make_model(), make_bundle(8), target, progress=False)
    rebuilt.verify()

    (target / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        open_cache(target)
    with pytest.raises(FileNotFoundError, match="no embedding cache"):
        open_cache(tmp_path / "missing")


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


def test_cache_path():
    assert cache_path("data/cache", "r18-mrl", "fashion-mnist", "test") == Path(
        "data/cache/r18-mrl/fashion-mnist-test"
    )
    with pytest.raises(ValueError, match="model_name"):
        cache_path("data/cache", "a/b", "fashion-mnist", "test")
    with pytest.raises(ValueError, match="split"):
        cache_path("data/cache", "m", "fashion-mnist", "")


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_install_replaces_an_existing_cache(tmp_path, atomic_swap):
    new, target = tmp_path / ".c.tmp-x", tmp_path / "c"
    for path, text in ((new, "new"), (target, "old")):
        path.mkdir()
        (path / "manifest.json").write_text(text)
    install(new, target, atomic_swap=atomic_swap)
    assert (target / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an embedding cache"):
        embed_dataset(make_model(), make_bundle(4), tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"


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
