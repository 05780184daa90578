"""WordNet ancestors and superclasses for ImageNet-derived classes.

The hierarchy is ImageNet's own WordNet metadata: ``wordnet.is_a.txt`` (``parent child``
per line) and ``words.txt`` (``wnid<TAB>synonyms``). A compact copy restricted to the
ImageNet-1K classes (which include all 200 Tiny-ImageNet classes) and their ancestors ships
in ``mrl_analysis/data/wordnet_ancestors.json`` so that everything here works without
the full metadata; ``scripts/build_wordnet_table.py`` regenerates it. Give
:func:`load_wordnet` the metadata folder to work on any of the 82k synsets.

WordNet is a DAG: 75 synsets above ImageNet-1K have several parents (a *domestic cat* is
both a *cat* and a *domestic animal*). :meth:`WordNet.ancestors` returns one path to the
root, choosing at each step the parent with the longest path to the root (the most
specific lineage; ties go to the smallest wnid). :meth:`WordNet.all_ancestors` returns every
ancestor, and superclass membership (``superclasses=``) uses all of them.

Two superclass lists are provided, both in precedence order (a class goes to the *first*
listed synset it descends from, so specific synsets come before the general ones that
contain them):

* :data:`PAPER_SUPERCLASSES`: the 30 ImageNet-1K superclasses of the MRL paper (Table 24,
  row by row), used with ``reject="other"`` for its 31-way setup (Table 25, Fig. 10);
  they cover 528 of the 1000 classes.
* :data:`COARSE_SUPERCLASSES`: 28 broad groups (dog, bird, vehicle, clothing, device, ...)
  that cover all Tiny-ImageNet classes and all ImageNet-1K classes but 4 (street sign,
  traffic light, bubble, toilet tissue: use ``reject=``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("wordnet_ancestors.json")
TABLE_FORMAT = "mrl-analysis/wordnet-table/1"
ROOT_WNID = "n00001740"  # entity

PAPER_SUPERCLASSES: tuple[str, ...] = (
    "n02159955",  # insect
    "n03791235",  # motor vehicle
    "n02394477",  # artiodactyl
    "n07707451",  # vegetable
    "n03414162",  # game equipment
    "n02092468",  # terrier
    "n01726692",  # serpent
    "n03699975",  # machine
    "n03733925",  # measuring device
    "n02104523",  # sheepdog
    "n04014297",  # protective covering
    "n02098550",  # sporting dog
    "n04530566",  # vessel, watercraft
    "n02913152",  # building
    "n01674464",  # lizard
    "n03419014",  # garment
    "n02087551",  # hound
    "n02484322",  # monkey
    "n03528263",  # home appliance
    "n04586932",  # wind instrument
    "n04531098",  # vessel
    "n02512053",  # fish
    "n07570720",  # nourishment
    "n03278248",  # electronic equipment
    "n01525720",  # oscine
    "n03405725",  # furniture
    "n02000954",  # wading bird
    "n04451818",  # tool
    "n02083346",  # canine
    "n03738472",  # mechanism
)

COARSE_SUPERCLASSES: tuple[str, ...] = (
    "n02084071",  # dog
    "n02120997",  # feline
    "n01861778",  # mammal
    "n01503061",  # bird
    "n01661091",  # reptile
    "n01627424",  # amphibian
    "n02512053",  # fish
    "n02159955",  # insect
    "n01905661",  # invertebrate
    "n00007846",  # person
    "n12992868",  # fungus
    "n07707451",  # vegetable
    "n13134947",  # fruit
    "n00021265",  # food
    "n00017222",  # plant
    "n09287968",  # geological formation
    "n04524313",  # vehicle
    "n03051540",  # clothing
    "n03405725",  # furniture
    "n03800933",  # musical instrument
    "n02729837",  # appliance
    "n03094503",  # container
    "n03122748",  # covering
    "n03183080",  # device
    "n04341686",  # structure
    "n03294048",  # equipment
    "n03575240",  # instrumentality
    "n00021939",  # artifact (the rest: towels, pillows, teddy bears, ...)
)


class WordNet:
    """A (sub-)graph of WordNet: parents and synonyms per wnid.

    ``imagenet1k`` is the ImageNet-1K class list in index order as ``(wnid, name)`` pairs
    (names as in ``imagenet_class_index.json``); ``tiny_imagenet`` the Tiny-ImageNet wnids.
    Both are empty when the source had no such list.
    """

    def __init__(
        self,
        parents: Mapping[str, Sequence[str]],
        words: Mapping[str, str],
        imagenet1k: Sequence[tuple[str, str]] = (),
        tiny_imagenet: Sequence[str] = (),
    ) -> None:
        self._parents = {c: list(ps) for c, ps in parents.items()}
        self._words = dict(words)
        self.imagenet1k: list[tuple[str, str]] = [(w, n) for w, n in imagenet1k]
        self.tiny_imagenet: list[str] = list(tiny_imagenet)
        self._paths: dict[str, tuple[str, ...]] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        is_a: str | os.PathLike,
        words: str | os.PathLike,
        class_index: str | os.PathLike | None = None,
        tiny_wnids: str | os.PathLike | None = None,
    ) -> WordNet:
        """Read ImageNet's WordNet metadata files (see the module docstring)."""
        parents: dict[str, list[str]] = {}
        for line in _read_lines(is_a):
            parent, child = line.split()
            parents.setdefault(child, []).append(parent)
        names = dict(line.split("\t", 1) for line in _read_lines(words))
        imagenet1k: list[tuple[str, str]] = []
        if class_index is not None:
            index = json.loads(Path(class_index).read_text())
            imagenet1k = [tuple(index[str(i)]) for i in range(len(index))]
        tiny = _read_lines(tiny_wnids) if tiny_wnids is not None else []
        return cls(parents, names, imagenet1k, tiny)

    @classmethod
    def from_table(cls, path: str | os.PathLike = TABLE_PATH) -> WordNet:
        """Read a compact table written by :meth:`save`."""
        table = json.loads(Path(path).read_text())
        if table.get("format") != TABLE_FORMAT:
            raise ValueError(
                f"{path} is not a WordNet table of format {TABLE_FORMAT!r}; "
                "regenerate it with scripts/build_wordnet_table.py"
            )
        return cls(
            table["parents"],
            table["words"],
            [tuple(pair) for pair in table["imagenet1k"]],
            table["tiny_imagenet"],
        )

    def restricted_to(self, wnids: Iterable[str]) -> WordNet:
        """The sub-graph of ``wnids`` and all their ancestors (same answers for them)."""
        keep: set[str] = set()
        for wnid in wnids:
            keep.add(self._check(wnid))
            keep.update(self.all_ancestors(wnid))
        return WordNet(
            {c: self._parents[c] for c in sorted(keep) if c in self._parents},
            {w: self._words[w] for w in sorted(keep) if w in self._words},
            self.imagenet1k,
            self.tiny_imagenet,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write this graph as a compact JSON table (one top-level key per line)."""
        table = {
            "format": TABLE_FORMAT,
            "imagenet1k": [list(pair) for pair in self.imagenet1k],
            "tiny_imagenet": self.tiny_imagenet,
            "parents": dict(sorted(self._parents.items())),
            "words": dict(sorted(self._words.items())),
        }
        lines = [
            f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'), ensure_ascii=False)}"
            for k, v in table.items()
        ]
        out = Path(path)
        out.write_text("{" + ",\n".join(lines) + "}\n", encoding="utf-8")
        return out

    # -- lookups ------------------------------------------------------------------------

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._words or wnid in self._parents

    def _check(self, wnid: str) -> str:
        if wnid not in self:
            raise ValueError(
                f"unknown WordNet id {wnid!r}: the shipped table covers only ImageNet-1K "
                "classes and their ancestors; for other synsets load the full metadata "
                "with load_wordnet('<folder with wordnet.is_a.txt and words.txt>')"
            )
        return wnid

    def words(self, wnid: str) -> str:
        """All synonyms of ``wnid`` as in ``words.txt`` (e.g. ``"tabby, tabby cat"``)."""
        return self._words.get(self._check(wnid), wnid)

    def name(self, wnid: str) -> str:
        """The first synonym of ``wnid`` (e.g. ``"tabby"``)."""
        return self.words(wnid).split(",")[0].strip()

    def parents(self, wnid: str) -> list[str]:
        """Direct parents (hypernyms) of ``wnid``; empty for the root."""
        return list(self._parents.get(self._check(wnid), []))

    def _path(self, wnid: str) -> tuple[str, ...]:
        # Iterative so that deep chains never hit the recursion limit; memoised per node.
        todo = [self._check(wnid)]
        while todo:
            node = todo[-1]
            if node in self._paths:
                todo.pop()
                continue
            missing = [p for p in self._parents.get(node, []) if p not in self._paths]
            if missing:
                todo.extend(missing)
                continue
            candidates = [self._paths[p] for p in self._parents.get(node, [])]
            best = min(candidates, key=lambda path: (-len(path), path[0]), default=())
            self._paths[node] = (node, *best)
            todo.pop()
        return self._paths[wnid]

    def ancestors(self, wnid: str) -> list[str]:
        """One path from ``wnid``'s parent up to the root, nearest first.

        Where a synset has several parents, the one with the longest path to the root is
        followed (ties: smallest wnid), so the answer is deterministic.
        """
        return list(self._path(wnid)[1:])

    def all_ancestors(self, wnid: str) -> list[str]:
        """Every ancestor of ``wnid`` in the DAG, by distance (then wnid), nearest first."""
        frontier, seen, out = [self._check(wnid)], {wnid}, []
        while frontier:
            nxt = sorted({p for node in frontier for p in self._parents.get(node, [])} - seen)
            seen.update(nxt)
            out.extend(nxt)
            frontier = nxt
        return out

    def depth(self, wnid: str) -> int:
        """Number of edges from the root along :meth:`ancestors` (the root has depth 0)."""
        return len(self._path(wnid)) - 1

    def find(self, name: str) -> list[str]:
        """Wnids having ``name`` among their synonyms (case-insensitive), sorted."""
        key = name.strip().lower()
        return sorted(
            w
            for w, syn in self._words.items()
            if key in (s.strip().lower() for s in syn.split(","))
        )

    # -- superclasses -------------------------------------------------------------------

    def superclass_map(
        self,
        wnids: Iterable[str],
        depth: int | None = None,
        superclasses: Sequence[str] | None = None,
        reject: str | None = None,
        names: bool = True,
    ) -> dict[str, str]:
        """Map each class wnid to a superclass.

        * ``depth=d``: the ancestor ``d`` edges below the root on :meth:`ancestors`' path
          (a class shallower than ``d`` maps to itself).
        * ``superclasses=[...]``: the first listed synset the class descends from (or is),
          over all its ancestors. Classes under none map to ``reject``; without
          ``reject`` they raise a ``ValueError``.

        Values are superclass names (first synonym; the full synonym list where two
        superclasses share a first synonym, e.g. "vessel" and "vessel, watercraft"), or
        wnids with ``names=False``.
        """
        wnids = [self._check(w) for w in wnids]
        if (depth is None) == (superclasses is None):
            raise ValueError("give exactly one of depth= or superclasses=")
        if depth is not None:
            if depth < 0:
                raise ValueError(f"depth must be >= 0 (0 is the root), got {depth}")
            mapping = {w: self._path(w)[::-1][min(depth, self.depth(w))] for w in wnids}
        else:
            order = {self._check(s): i for i, s in reversed(list(enumerate(superclasses)))}
            mapping, unmatched = {}, []
            for w in wnids:
                hits = [order[a] for a in (w, *self.all_ancestors(w)) if a in order]
                if hits:
                    mapping[w] = superclasses[min(hits)]
                elif reject is None:
                    unmatched.append(w)
            if unmatched:
                shown = ", ".join(f"{w} ({self.name(w)})" for w in unmatched[:5])
                raise ValueError(
                    f"{len(unmatched)} classes descend from none of the superclasses, e.g. "
                    f"{shown}; pass reject='other' to give them a catch-all label"
                )
        labels = self._unique_names(sorted(set(mapping.values()))) if names else {}
        if reject is not None and reject in labels.values():
            raise ValueError(f"reject label {reject!r} is also a superclass name; pick another")
        return {w: labels.get(mapping[w], mapping[w]) if w in mapping else reject for w in wnids}

    def _unique_names(self, wnids: Sequence[str]) -> dict[str, str]:
        first = {w: self.name(w) for w in wnids}
        clashes = {n for n, k in Counter(first.values()).items() if k > 1}
        out = {w: self.words(w) if first[w] in clashes else first[w] for w in wnids}
        repeated = {n for n, k in Counter(out.values()).items() if k > 1}
        return {w: f"{n} ({w})" if n in repeated else n for w, n in out.items()}


def _read_lines(path: str | os.PathLike) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


@lru_cache(maxsize=4)
def _load(path: str | None) -> WordNet:
    if path is None:
        return WordNet.from_table(TABLE_PATH)
    p = Path(path)
    if p.is_file():
        return WordNet.from_table(p)
    is_a, words = p / "wordnet.is_a.txt", p / "words.txt"
    if not (is_a.is_file() and words.is_file()):
        raise FileNotFoundError(
            f"no WordNet metadata at {p}: expected {is_a.name} and {words.name} there "
            "(ImageNet's metadata), or a JSON table written by scripts/build_wordnet_table.py"
        )
    index = p / "imagenet_class_index.json"
    return WordNet.from_files(is_a, words, index if index.is_file() else None)


def load_wordnet(path: str | os.PathLike | None = None) -> WordNet:
    """The shipped compact table (``path=None``), a table file, or a metadata folder.

    A metadata folder holds ``wordnet.is_a.txt`` and ``words.txt`` (and optionally
    ``imagenet_class_index.json``). Results are cached per path.
    """
    return _load(None if path is None else str(Path(path).resolve()))


def ancestors(wnid: str, wordnet: WordNet | None = None) -> list[str]:
    """:meth:`WordNet.ancestors` on ``wordnet`` (default: the shipped table)."""
    return (wordnet or load_wordnet()).ancestors(wnid)


def superclass_map(
    wnids: Iterable[str],
    depth: int | None = None,
    superclasses: Sequence[str] | None = None,
    reject: str | None = None,
    names: bool = True,
    wordnet: WordNet | None = None,
) -> dict[str, str]:
    """:meth:`WordNet.superclass_map` on ``wordnet`` (default: the shipped table)."""
    return (wordnet or load_wordnet()).superclass_map(
        wnids, depth=depth, superclasses=superclasses, reject=reject, names=names
    )


def imagenet1k_classes() -> list[tuple[str, str]]:
    """ImageNet-1K ``(wnid, name)`` pairs in class-index order (sorted wnids)."""
    return list(load_wordnet().imagenet1k)
