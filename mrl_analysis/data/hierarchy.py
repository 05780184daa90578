"""Superclasses: the one resolver every analysis, notebook and the explorer use.

A :class:`SuperclassMap` maps fine class indices to superclass indices. It is built by
:func:`resolve_superclasses` from exactly one source:

* default: the hierarchy stored with the data (a dataset's built-in one, e.g.
  Fashion-MNIST's tops / bottoms / dresses / footwear / bags, or Tiny-ImageNet's broad
  WordNet groups), as kept in every embedding cache;
* ``hierarchy``: a JSON file or a dict mapping class ids *or* class names to superclasses;
* ``wordnet_depth``: the WordNet ancestor that many edges below the root;
* ``wordnet_superclasses``: chosen WordNet synsets; each class goes to the first it
  descends from.

Classes that the source leaves out, and the datasets' pooled leftovers (``"other"``), form
the *reject* group: a catch-all that is no real superclass (confusions inside it are not
"within a superclass").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl_analysis.data import wordnet

#: The name the datasets give their pooled leftover classes, and the default reject group.
REJECT = "other"


def load_hierarchy(path: str | os.PathLike) -> dict[str, str]:
    """A user hierarchy from a JSON object ``{class_id: superclass name}``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"hierarchy file {p} not found: give a JSON {{class_id: name}}")
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{p} must hold one JSON object mapping class ids to superclass names")
    return {str(k): v for k, v in data.items()}


def hierarchy_by_id(
    hierarchy: str | os.PathLike | Mapping[str, str],
    class_ids: Sequence[str],
    class_names: Sequence[str] | None = None,
) -> dict[str, str]:
    """A user hierarchy keyed by class id: each class is looked up by its id, then its name.

    ``hierarchy`` is a JSON file or a dict whose keys are class ids *or* class names;
    classes it names neither way are left out of the result.
    """
    user = load_hierarchy(hierarchy) if isinstance(hierarchy, (str, os.PathLike)) else hierarchy
    ids = [str(c) for c in class_ids]
    names = [str(n) for n in class_names] if class_names is not None else ids
    by_id = {c: user.get(c, user.get(n)) for c, n in zip(ids, names, strict=True)}
    return {c: str(p) for c, p in by_id.items() if p is not None}


def wordnet_hierarchy(
    class_ids: Sequence[str], superclasses: Sequence[str]
) -> dict[str, str] | None:
    """The default hierarchy of WordNet-id classes: each class goes to the first of
    ``superclasses`` it descends from, the rest to :data:`REJECT`; None when some class is
    not a WordNet id."""
    wn = wordnet.load_wordnet()
    if not all(w in wn for w in class_ids):
        return None
    return wn.superclass_map(class_ids, superclasses=superclasses, reject=REJECT)


@dataclass(frozen=True)
class SuperclassMap:
    """Fine class index → superclass index.

    ``index[c]`` is the superclass of fine class ``c`` (a position in ``names``);
    ``reject`` names the catch-all superclass, if any (always last in ``names``).
    Build one with :meth:`from_hierarchy`.
    """

    index: np.ndarray
    names: list[str]
    reject: str | None = None

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: Mapping[str, str] | str | os.PathLike,
        class_ids: Sequence[str],
        *,
        superclasses: Sequence[str] | None = None,
        reject: str | None = None,
    ) -> SuperclassMap:
        """The map for classes ``class_ids`` (in label order, e.g. ``cache.class_ids``).

        ``hierarchy`` maps class ids to superclass names (``cache.hierarchy``), or is a
        path to such a JSON file. ``superclasses`` keeps only those, in that order;
        otherwise every name in the hierarchy is used, sorted. A class outside them, or
        missing from the hierarchy, goes to the ``reject`` superclass; without ``reject``
        that is an error. Classes the hierarchy already maps to ``reject`` (the datasets
        pool ImageNet's leftovers under ``"other"``) go there too, so pass
        ``reject="other"`` to flag that group as the reject superclass.
        """
        if isinstance(hierarchy, (str, os.PathLike)):
            hierarchy = load_hierarchy(hierarchy)
        ids = [str(c) for c in class_ids]
        if not ids:
            raise ValueError("class_ids is empty: give the class id of every label, in order")
        parents = [hierarchy.get(c) for c in ids]
        if superclasses is None:
            names = sorted({p for p in parents if p is not None and p != reject})
        else:
            names = list(dict.fromkeys(superclasses))
            unknown = set(names) - set(hierarchy.values())
            if unknown:
                raise ValueError(
                    f"superclasses {sorted(unknown)} do not appear in the hierarchy's values"
                )
            if reject is not None and reject in names:
                raise ValueError(f"reject {reject!r} is also listed in superclasses: drop one")
        lookup = {n: i for i, n in enumerate(names)}
        missing = [c for c, p in zip(ids, parents, strict=True) if p not in lookup]
        if missing and reject is None:
            raise ValueError(
                f"{len(missing)} classes have no chosen superclass (e.g. {missing[:3]}): "
                "pass reject='other' to pool them, or choose superclasses that cover them"
            )
        if reject is not None:
            names.append(reject)
        index = np.array([lookup.get(p, len(names) - 1) for p in parents], dtype=np.int64)
        return cls(index=index, names=names, reject=reject)

    @property
    def num_superclasses(self) -> int:
        return len(self.names)

    def of(self, labels: np.ndarray) -> np.ndarray:
        """Superclass indices of fine class indices (any shape)."""
        return self.index[np.asarray(labels)]

    def members(self, superclass: str) -> np.ndarray:
        """Fine class indices in ``superclass``."""
        if superclass not in self.names:
            raise ValueError(f"unknown superclass {superclass!r}: use one of {self.names}")
        return np.flatnonzero(self.index == self.names.index(superclass))


def _auto_reject(tree: Mapping[str, str], class_ids: Sequence[str]) -> str | None:
    complete = all(c in tree for c in class_ids)
    return REJECT if REJECT in tree.values() or not complete else None


def resolve_superclasses(
    class_ids: Sequence[str],
    class_names: Sequence[str] | None = None,
    stored: Mapping[str, str] | None = None,
    *,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    wordnet_depth: int | None = None,
    wordnet_superclasses: Sequence[str] | None = None,
    superclasses: Sequence[str] | None = None,
    reject: str | None = "auto",
) -> SuperclassMap:
    """The :class:`SuperclassMap` of classes ``class_ids`` (label order) from one source.

    ``stored``: the data's own hierarchy (``cache.hierarchy``), used when no other source is
    given. ``class_names`` lets a user ``hierarchy`` name classes by name. ``superclasses``
    and ``reject`` go to :meth:`SuperclassMap.from_hierarchy`; ``reject="auto"`` (default)
    pools into ``"other"`` the classes the source leaves out or already calls ``"other"``,
    and uses no reject group when the source covers every class with real superclasses.
    """
    ids = [str(c) for c in class_ids]
    names = [str(n) for n in class_names] if class_names is not None else ids
    given = [
        name
        for name, value in {
            "hierarchy": hierarchy,
            "wordnet_depth": wordnet_depth,
            "wordnet_superclasses": wordnet_superclasses,
        }.items()
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one source of superclasses, not {' and '.join(given)}")
    if wordnet_depth is not None or wordnet_superclasses is not None:
        wn = wordnet.load_wordnet()
        unknown = [c for c in ids if c not in wn]
        if unknown:
            raise ValueError(
                f"{given[0]} needs WordNet ids as class ids, but {len(unknown)} are not "
                f"(e.g. {unknown[:3]}); pass hierarchy='<file>.json' instead"
            )
        pool = REJECT if reject == "auto" else reject
        tree: Mapping[str, str] = (
            wn.superclass_map(ids, depth=wordnet_depth)
            if wordnet_depth is not None
            else wn.superclass_map(ids, superclasses=wordnet_superclasses, reject=pool)
        )
    elif hierarchy is not None:
        user = load_hierarchy(hierarchy) if isinstance(hierarchy, (str, os.PathLike)) else hierarchy
        tree = hierarchy_by_id(user, ids, names)
        if not tree:
            raise ValueError(
                "the hierarchy names none of the classes by id or name; its keys look like "
                f"{list(user)[:3]}, the classes like {ids[:3]}"
            )
    else:
        if not stored:
            raise ValueError(
                "the data stores no class hierarchy: pass hierarchy= (a JSON file class -> "
                "superclass) or wordnet_depth= (ImageNet-like data)"
            )
        tree = stored
    if reject == "auto":
        reject = _auto_reject(tree, ids)
    return SuperclassMap.from_hierarchy(tree, ids, superclasses=superclasses, reject=reject)
