"""WordNet ancestors and superclasses: the shipped table, hand-made graphs, full metadata."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path

import pytest

from mrl_analysis.data import wordnet
from mrl_analysis.data.wordnet import (
    COARSE_SUPERCLASSES,
    PAPER_SUPERCLASSES,
    ROOT_WNID,
    TABLE_PATH,
    WordNet,
    ancestors,
    imagenet1k_classes,
    load_wordnet,
    superclass_map,
)

ROOT = Path(__file__).resolve().parents[2]
META = ROOT.parent / "shared" / "data" / "imagenet-meta"
TINY_WNIDS = ROOT.parent / "shared" / "data" / "tiny-imagenet-200" / "wnids.txt"
needs_meta = pytest.mark.skipif(not META.is_dir(), reason=f"{META} not present")

TABBY, DOMESTIC_CAT, CAT, FELINE = "n02123045", "n02121808", "n02121620", "n02120997"
BOA, SNAKE = "n01742172", "n01726692"


def _toy() -> WordNet:
    # r -> a -> b -> x and r -> c -> x: x has two parents, b's lineage is longer.
    # r -> p2 -> y and r -> p1 -> y: equal lengths, the smaller wnid wins.
    parents = {"a": ["r"], "b": ["a"], "c": ["r"], "x": ["c", "b"], "p1": ["r"], "p2": ["r"]}
    parents["y"] = ["p2", "p1"]
    words = {w: f"{w} name, {w} alias" for w in ["r", "a", "b", "c", "x", "y", "p1", "p2"]}
    return WordNet(parents, words)


def test_known_ancestors_in_the_shipped_table():
    wn = load_wordnet()
    path = wn.ancestors(TABBY)
    assert path[:3] == [DOMESTIC_CAT, CAT, FELINE]
    assert path[-1] == ROOT_WNID
    assert wn.name(TABBY) == "tabby" and wn.words(TABBY) == "tabby, tabby cat"
    # Domestic cat is also a "domestic animal"; the longer (cat) lineage is the path.
    assert set(wn.parents(DOMESTIC_CAT)) == {CAT, "n01317541"}
    assert "n01317541" in wn.all_ancestors(TABBY) and "n01317541" not in path
    assert BOA in wn.tiny_imagenet and SNAKE in ancestors(BOA)
    assert wn.depth(ROOT_WNID) == 0 and wn.depth(TABBY) == len(path)


def test_multiple_parents_are_resolved_deterministically():
    wn = _toy()
    assert wn.ancestors("x") == ["b", "a", "r"]
    assert wn.ancestors("y") == ["p1", "r"]
    assert wn.all_ancestors("x") == ["b", "c", "a", "r"]
    assert wn.name("x") == "x name"
    assert wn.superclass_map(["x", "y"], depth=1, names=False) == {"x": "a", "y": "p1"}
    assert wn.superclass_map(["x", "b"], depth=5, names=False) == {"x": "x", "b": "b"}


def test_paper_superclasses_give_the_31_way_setup():
    classes = [w for w, _ in imagenet1k_classes()]
    assert len(classes) == 1000 and classes == sorted(classes)
    mapping = superclass_map(classes, superclasses=PAPER_SUPERCLASSES, reject="other")
    counts = Counter(mapping.values())
    assert len(counts) == 31 and counts["other"] == 472
    # Specific dog groups come before "canine", the two kinds of vessel stay apart.
    assert mapping["n02093256"] == "terrier"  # Staffordshire bullterrier
    assert counts["vessel"] == 23 and counts["vessel, watercraft"] == 15
    assert superclass_map([TABBY], superclasses=[CAT, FELINE], names=False) == {TABBY: CAT}
    assert superclass_map([CAT], superclasses=[FELINE, CAT], names=False) == {CAT: FELINE}


def test_coarse_superclasses_cover_tiny_imagenet():
    wn = load_wordnet()
    mapping = wn.superclass_map(wn.tiny_imagenet, superclasses=COARSE_SUPERCLASSES)
    assert len(mapping) == 200 and mapping[TABBY] == "feline" and mapping[BOA] == "reptile"
    classes = [w for w, _ in wn.imagenet1k]
    every = wn.superclass_map(classes, superclasses=COARSE_SUPERCLASSES, reject="other")
    assert Counter(every.values())["other"] == 4


def test_depth_map_uses_the_path_from_the_root():
    wn = load_wordnet()
    assert set(wn.superclass_map([TABBY, BOA], depth=0).values()) == {"entity"}
    by_depth = wn.superclass_map([TABBY], depth=wn.depth(FELINE), names=False)
    assert by_depth == {TABBY: FELINE}


def test_bad_requests_raise_clear_errors(tmp_path):
    wn = load_wordnet()
    with pytest.raises(ValueError, match="exactly one of depth= or superclasses="):
        wn.superclass_map([TABBY])
    with pytest.raises(ValueError, match="exactly one"):
        wn.superclass_map([TABBY], depth=2, superclasses=[FELINE])
    with pytest.raises(ValueError, match="depth must be >= 0"):
        wn.superclass_map([TABBY], depth=-1)
    with pytest.raises(ValueError, match="unknown WordNet id 'n99999999'.*load_wordnet"):
        wn.ancestors("n99999999")
    with pytest.raises(ValueError, match=r"1 classes descend from none.*n01742172 \(boa"):
        wn.superclass_map([TABBY, BOA], superclasses=[FELINE])
    with pytest.raises(ValueError, match="also a superclass name"):
        wn.superclass_map([TABBY, BOA], superclasses=[FELINE], reject="feline")
    with pytest.raises(FileNotFoundError, match="wordnet.is_a.txt"):
        load_wordnet(tmp_path)
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="build_wordnet_table"):
        load_wordnet(bad)


def test_find_and_round_trip(tmp_path):
    wn = load_wordnet()
    assert wn.find("Crane") == ["n02012849", "n03126707"]
    small = wn.restricted_to([TABBY])
    assert set(small.all_ancestors(TABBY)) | {TABBY} == set(small._words)
    again = WordNet.from_table(small.save(tmp_path / "t.json"))
    assert again.ancestors(TABBY) == wn.ancestors(TABBY) and again.imagenet1k == wn.imagenet1k


@pytest.mark.integration
@needs_meta
def test_shipped_table_agrees_with_full_metadata():
    full, table = load_wordnet(META), load_wordnet()
    assert table.imagenet1k == full.imagenet1k
    assert table.tiny_imagenet == TINY_WNIDS.read_text().split()
    for wnid in {w for w, _ in full.imagenet1k} | set(table.tiny_imagenet):
        assert table.ancestors(wnid) == full.ancestors(wnid)
        assert table.all_ancestors(wnid) == full.all_ancestors(wnid)
        assert [table.words(a) for a in table.all_ancestors(wnid)] == [
            full.words(a) for a in full.all_ancestors(wnid)
        ]
    assert wordnet.load_wordnet(META) is full  # cached per path


@pytest.mark.integration
@needs_meta
def test_build_script_reproduces_the_shipped_table(tmp_path):
    script = runpy.run_path(str(ROOT / "scripts" / "build_wordnet_table.py"), run_name="test")
    out = script["main"](["--out", str(tmp_path / "t.json")])
    assert out.read_bytes() == TABLE_PATH.read_bytes()
    assert TABLE_PATH.stat().st_size < 200_000
