"""Issue 13 probes on building caches: nobody's files are replaced, a model of other classes
is refused by name, a full disk is one clear error, and killed builds leave no litter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_fakes import SMALL, make_bundle, make_model, one_torch_thread

from mrl_analysis.cache.build import ClassMismatchError, embed_dataset
from mrl_analysis.cache.reader import open_cache
from mrl_analysis.core.checks import NonFiniteError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


# ------------------------------------------------------------- someone else's folder


def test_refuses_to_replace_the_users_own_arrays(tmp_path):
    """A folder of the user's own features.npy / labels.npy is no cache: it has no manifest."""
    mine = tmp_path / "c"
    mine.mkdir()
    np.save(mine / "features.npy", np.arange(6.0).reshape(3, 2))
    np.save(mine / "labels.npy", np.arange(3))
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    with pytest.raises(ValueError, match=r"not an embedding cache.*features\.npy.*no manifest"):
        embed_dataset(make_model(), make_bundle(8), mine, progress=False)
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".c.")] == [".c.lock"]


@pytest.mark.parametrize("manifest", ['{"format": "someone-elses/2"}', "not json"])
def test_refuses_a_folder_whose_manifest_is_not_ours(tmp_path, manifest):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text(manifest)
    np.save(tmp_path / "c" / "features.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not an embedding cache"):
        embed_dataset(make_model(), make_bundle(8), tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "manifest.json").read_text() == manifest


def test_a_cache_holding_the_users_files_is_not_replaced(tmp_path):
    target = tmp_path / "c"
    embed_dataset(make_model(seed=0), make_bundle(8), target, progress=False)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"does not list \(\[.notes\.txt.\]\)"):
        embed_dataset(make_model(seed=1), make_bundle(8), target, progress=False)
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()
    # Our own cache, stale for the new weights, is replaced as before.
    rebuilt = embed_dataset(make_model(seed=1), make_bundle(8), target, progress=False)
    assert rebuilt.manifest["build"]["num_chunks"] == 1


# --------------------------------------------------------------- classes of the model


def _with_classes(model, classes):
    model.meta = {"classes": list(classes)}
    return model


def test_a_model_of_other_classes_is_refused_by_name(tmp_path):
    bundle = make_bundle(8)  # class ids c0 .. c9
    other = [f"c{i}" for i in range(9)] + ["zebra"]
    model = _with_classes(make_model(), other)
    with pytest.raises(ClassMismatchError, match=r"model's \['zebra'\].*dataset's \['c9'\]"):
        embed_dataset(model, bundle, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists(), "nothing is computed for a refused model"

    swapped = [f"c{i}" for i in (1, 0, *range(2, 10))]
    with pytest.raises(ClassMismatchError, match=r"another order \(output 0 is 'c1', label 0"):
        embed_dataset(_with_classes(make_model(), swapped), bundle, tmp_path / "c", **SMALL)

    # The same classes, recorded by id, are fine; so are names matching the bundle's.
    ids = _with_classes(make_model(), bundle.class_ids)
    embed_dataset(ids, bundle, tmp_path / "ids", progress=False).verify()
    named = make_model()
    named.class_names = list(bundle.class_names)
    embed_dataset(named, bundle, tmp_path / "names", progress=False).verify()


def test_a_model_without_a_class_list_must_have_as_many_outputs(tmp_path):
    bundle = make_bundle(8)
    bundle.class_ids, bundle.class_names = bundle.class_ids[:6], bundle.class_names[:6]
    bundle.targets = bundle.targets % 6
    bundle.hierarchy = None
    with pytest.raises(ClassMismatchError, match="10 outputs but the dataset has 6 classes"):
        embed_dataset(make_model(), bundle, tmp_path / "c", progress=False)


def test_a_declared_class_subset_stays_allowed_and_is_checked(tmp_path):
    bundle = make_bundle(8)
    # A 10-output model trained on the bundle's classes in reverse order: declared, allowed.
    order = list(range(9, -1, -1))
    model = _with_classes(make_model(), [bundle.class_ids[i] for i in order])
    cache = embed_dataset(model, bundle, tmp_path / "c", logit_classes=order, progress=False)
    assert cache.manifest["logit_classes"] == order
    # A declaration contradicting the classes the model records is refused.
    with pytest.raises(ClassMismatchError, match=r"output 0: 'c9' vs label 0 'c0'"):
        embed_dataset(model, bundle, tmp_path / "d", logit_classes=list(range(10)), **SMALL)


def test_a_split_restricted_to_some_classes_stays_allowed(tmp_path):
    """ImageNet-A / -R: labels index the model's classes, logits outside are masked."""
    bundle = make_bundle(8)
    bundle.class_subset_indices = np.array([0, 2, 4, 6, 8])
    model = _with_classes(make_model(), bundle.class_ids)
    cache = embed_dataset(model, bundle, tmp_path / "c", progress=False)
    assert np.isneginf(cache.logits()[:, :, 1]).all()


def test_a_model_giving_nan_is_refused_before_anything_is_cached(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.fc.nesting_classifier_0.weight[3, 0] = float("nan")  # class 3 of the 1-d head
    with pytest.raises(NonFiniteError, match=r"logits of a batch of .* 8 non-finite"):
        embed_dataset(model, make_bundle(8), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------ disk full

FULL_DISK = """
import json, resource, signal, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from cache_fakes import make_bundle, make_model
from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.store import DiskFullError

args = json.loads(sys.argv[2])
model, bundle = make_model(), make_bundle(24)
# A write past RLIMIT_FSIZE fails with EFBIG, as one past the free space fails with ENOSPC;
# the signal the kernel also sends would end the process before the error is seen.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (args["limit"], resource.RLIM_INFINITY))
try:
    embed_dataset(model, bundle, args["dir"], batch_size=4, chunk_size=8, progress=False,
                  features_dtype="float32")
except DiskFullError as exc:
    print(json.dumps({"error": str(exc), "path": str(exc.path)}))
    sys.exit(3)
print(json.dumps({"error": None}))
"""


def _embed_with_file_limit(tmp_path: Path, limit: int) -> dict:
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    args = json.dumps({"dir": str(tmp_path / "c"), "limit": limit})
    proc = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent), args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode in (0, 3), f"rc {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("limit", "where"),
    # 8 KiB: the first chunk (~20 KiB) cannot be written; 32 KiB: every chunk can, the
    # assembled features.npy (24 x 512 float32, ~49 KiB) cannot.
    [(8 << 10, r"chunk-000000\.npz"), (32 << 10, r"features\.npy")],
)
def test_disk_full_is_one_clear_error_and_the_build_resumes(tmp_path, limit, where):
    result = _embed_with_file_limit(tmp_path, limit)
    assert result["error"] is not None, "the file size limit did not stop the build"
    assert result["error"].startswith("disk full at "), result["error"]
    assert "file size limit reached" in result["error"]
    assert re.search(where, result["path"]), result["path"]
    # No temporary file or folder is left behind; finished chunks are kept for a resume.
    assert not list(tmp_path.rglob("*.tmp")), "a half-written chunk was left"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "a temp folder was left"
    kept = sorted(tmp_path.glob(".c.partial-*/chunk-*.npz"))
    assert len(kept) == (0 if "chunk" in where else 3)
    if kept:
        assert "the next run resumes" in result["error"]

    resumed = embed_dataset(
        make_model(), make_bundle(24), tmp_path / "c", features_dtype="float32", **SMALL
    )
    assert resumed.manifest["build"]["chunks_resumed"] == len(kept)
    resumed.verify()


# -------------------------------------------------------------- killed builds' files


def test_temporary_files_of_killed_builds_are_cleaned(tmp_path):
    target = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(make_model(), make_bundle(fail_at=20), target, **SMALL)
    (work,) = tmp_path.glob(".c.partial-*")
    # What kill -9 leaves: a chunk half written, an assembly folder, another key's chunks.
    (work / "chunk-000002.npz.tmp").write_bytes(b"half")
    (tmp_path / ".c.tmp-0123456789abcdef-999").mkdir()
    (tmp_path / ".c.partial-0123456789abcdef").mkdir()
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(make_model(), make_bundle(fail_at=20), target, **SMALL)
    assert not (work / "chunk-000002.npz.tmp").exists(), "a killed chunk write was kept"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".c.")) == [
        ".c.lock",
        work.name,
    ]
    cache = embed_dataset(make_model(), make_bundle(), target, **SMALL)
    assert cache.manifest["build"]["chunks_resumed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.lock", "c"]
    open_cache(target).verify()
