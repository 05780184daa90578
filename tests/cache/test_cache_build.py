"""Building a cache: reuse, staleness, atomicity, resume, concurrency, checksums, install."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_fakes import (
    SMALL,
    N,
    inputs,
    instrument,
    leftovers,
    make_bundle,
    make_model,
    one_torch_thread,
)
from torchvision import transforms

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import open_cache
from mrl_analysis.cache.store import CacheCorruptedError, cache_path, install

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


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
from cache_fakes import instrument, make_bundle, make_model
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
