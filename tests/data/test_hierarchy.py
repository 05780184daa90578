"""The one superclass resolver: user hierarchies by id or name, stored ones, WordNet, reject."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrl_analysis.data.hierarchy import (
    REJECT,
    hierarchy_by_id,
    load_hierarchy,
    resolve_superclasses,
    wordnet_hierarchy,
)
from mrl_analysis.data.wordnet import COARSE_SUPERCLASSES

IDS = ["c0", "c1", "c2", "c3"]
NAMES = ["cat", "dog", "car", "bus"]
TABBY, BOA = "n02123045", "n01742172"


def test_user_hierarchy_is_looked_up_by_id_then_by_name(tmp_path):
    user = {"c0": "animal", "dog": "animal", "car": "vehicle", "c2": "machine"}
    assert hierarchy_by_id(user, IDS, NAMES) == {"c0": "animal", "c1": "animal", "c2": "machine"}
    assert hierarchy_by_id(user, IDS) == {"c0": "animal", "c2": "machine"}
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(user))
    assert hierarchy_by_id(path, IDS, NAMES) == hierarchy_by_id(user, IDS, NAMES)
    assert load_hierarchy(path) == user


def test_load_hierarchy_explains_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="hierarchy file"):
        load_hierarchy(tmp_path / "missing.json")
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="one JSON object"):
        load_hierarchy(bad)


def test_stored_hierarchy_is_the_default_and_covering_sources_have_no_reject():
    stored = {"c0": "animal", "c1": "animal", "c2": "vehicle", "c3": "vehicle"}
    smap = resolve_superclasses(IDS, NAMES, stored)
    assert smap.names == ["animal", "vehicle"] and smap.reject is None
    np.testing.assert_array_equal(smap.index, [0, 0, 1, 1])
    np.testing.assert_array_equal(smap.of(np.array([[3, 0]])), [[1, 0]])
    np.testing.assert_array_equal(smap.members("vehicle"), [2, 3])


def test_partial_user_hierarchy_pools_the_rest_as_reject():
    smap = resolve_superclasses(IDS, NAMES, None, hierarchy={"cat": "animal", "c1": "animal"})
    assert smap.names == ["animal", REJECT] and smap.reject == REJECT
    np.testing.assert_array_equal(smap.index, [0, 0, 1, 1])
    # A source that already pools classes under "other" flags that group as the reject.
    stored = {"c0": "animal", "c1": "animal", "c2": REJECT, "c3": REJECT}
    assert resolve_superclasses(IDS, NAMES, stored).reject == REJECT


def test_one_source_only_and_clear_errors():
    with pytest.raises(ValueError, match="not hierarchy and wordnet_depth"):
        resolve_superclasses(IDS, NAMES, None, hierarchy={"c0": "a"}, wordnet_depth=2)
    with pytest.raises(ValueError, match="stores no class hierarchy"):
        resolve_superclasses(IDS, NAMES, None)
    with pytest.raises(ValueError, match="names none of the classes"):
        resolve_superclasses(IDS, NAMES, None, hierarchy={"zebra": "animal"})
    with pytest.raises(ValueError, match="needs WordNet ids"):
        resolve_superclasses(IDS, NAMES, None, wordnet_depth=3)


def test_wordnet_sources():
    assert wordnet_hierarchy(["not-a-wnid"], COARSE_SUPERCLASSES) is None
    assert wordnet_hierarchy([TABBY, BOA], COARSE_SUPERCLASSES) == {
        TABBY: "feline",
        BOA: "reptile",
    }
    by_depth = resolve_superclasses([TABBY, BOA], wordnet_depth=0)
    assert by_depth.names == ["entity"] and by_depth.reject is None
    chosen = resolve_superclasses([TABBY, BOA], wordnet_superclasses=["n02120997"])  # feline
    assert chosen.names == ["feline", REJECT]
    np.testing.assert_array_equal(chosen.index, [0, 1])
