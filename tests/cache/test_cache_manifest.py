"""The manifest is under its own checksum: an edited nesting or class list is refused, a
re-indented one is not, and a rebuild recovers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cache_fakes import SMALL, make_bundle, make_model, one_torch_thread

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import open_cache
from mrl_analysis.cache.store import CacheCorruptedError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def cache_dir(tmp_path):
    model = make_model("mrl", nesting=[4, 8, 512])
    embed_dataset(model, make_bundle(), tmp_path / "mrl", **SMALL)
    return tmp_path / "mrl"


def _edit(cache_dir, change) -> None:
    path = cache_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=1))


def _set_nesting(m: dict) -> None:
    m["provenance"]["nesting"] = [8, 16, 512]


def _reverse_classes(m: dict) -> None:
    m["class_names"] = m["class_names"][::-1]


def _regroup(m: dict) -> None:
    m["hierarchy"]["c0"] = "odd"


def _drop_checksum(m: dict) -> None:
    del m["manifest_sha256"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_set_nesting, "was edited after the cache was built"),
        (_reverse_classes, "was edited after the cache was built"),
        (_regroup, "was edited after the cache was built"),
        (_drop_checksum, "carries no manifest_sha256"),
    ],
)
def test_edited_manifest_is_refused(cache_dir, change, says):
    truth = open_cache(cache_dir).logits_at(4)
    _edit(cache_dir, change)
    with pytest.raises(CacheCorruptedError, match=says) as err:
        # Trusted, the edited nesting made logits_at(8) return the m=4 head's logits.
        np.testing.assert_array_equal(open_cache(cache_dir).logits_at(8), truth)
    assert f"delete {cache_dir} and run embed_dataset again" in str(err.value)


def test_reformatted_manifest_still_opens(cache_dir):
    path = cache_dir / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4, sort_keys=True))
    assert open_cache(cache_dir).nesting == [4, 8, 512]


def test_rebuild_replaces_an_edited_manifest(cache_dir):
    _edit(cache_dir, _set_nesting)
    model = make_model("mrl", nesting=[4, 8, 512])
    rebuilt = embed_dataset(model, make_bundle(), cache_dir, **SMALL)
    assert rebuilt.nesting == [4, 8, 512] and open_cache(cache_dir).nesting == [4, 8, 512]
