"""Per-size scores of named models on one eval split, read from their caches.

A :class:`ScoreSet` holds logits ``[G, N, C]`` with one row per size. MRL and MRL-E caches
give one set each; FF-k caches (one size each) are stacked by size into one set named
``"FF"``, so that "MRL vs FF at the same sizes" is the same call for both. Themes that score
sizes (superclass, routing) take these arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.core.numeric import predictions, softmax

FF_NAME = "FF"


@dataclass(frozen=True)
class ScoreSet:
    """Per-size logits ``[G, N, C]`` of one model, or of stacked FF-k models, on one split.

    ``sources`` names the caches it was built from (one for MRL / MRL-E; the FF models in
    size order for the stacked FF set).
    """

    name: str
    kind: str
    logits: np.ndarray
    labels: np.ndarray
    nesting: list[int]
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    sources: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[2])

    def probabilities(self) -> np.ndarray:
        """Softmax over classes, float32 ``[G, N, C]`` (one size at a time)."""
        out = np.empty(self.logits.shape, dtype=np.float32)
        for g, logits in enumerate(self.logits):
            out[g] = softmax(logits)
        return out

    def predictions(self) -> np.ndarray:
        """Top-1 class per size and sample, int64 ``[G, N]``."""
        return predictions(self.logits)


def _check_same_split(caches: Mapping[str, EmbeddingCache]) -> None:
    names = list(caches)
    first = caches[names[0]]
    for name in names[1:]:
        other = caches[name]
        if other.class_ids != first.class_ids:
            raise ValueError(
                f"caches {names[0]!r} and {name!r} have different classes: "
                "give caches of one dataset"
            )
        if other.num_samples != first.num_samples or not np.array_equal(other.labels, first.labels):
            raise ValueError(
                f"caches {names[0]!r} and {name!r} hold different samples "
                f"({first.num_samples} vs {other.num_samples}, or other labels): "
                "give caches of the same eval split"
            )


def _single(name: str, cache: EmbeddingCache) -> ScoreSet:
    return ScoreSet(
        name=name,
        kind=cache.kind,
        logits=cache.logits(),
        labels=np.asarray(cache.labels),
        nesting=cache.nesting,
        class_names=cache.class_names,
        class_ids=cache.class_ids,
        hierarchy=cache.hierarchy,
        sources=(name,),
    )


def stack_ff(caches: Mapping[str, EmbeddingCache], name: str = FF_NAME) -> ScoreSet:
    """FF-k caches (one size each) stacked by size into one ``[G, N, C]`` score set."""
    if not caches:
        raise ValueError("no FF caches to stack: give at least one FF-k model's cache")
    not_ff = [n for n, c in caches.items() if c.kind != "ff"]
    if not_ff:
        raise ValueError(f"stack_ff takes FF-k caches only; {not_ff} are not kind 'ff'")
    _check_same_split(caches)
    order = sorted(caches, key=lambda n: caches[n].nesting[-1])
    sizes = [caches[n].nesting[-1] for n in order]
    repeated = sorted({m for m in sizes if sizes.count(m) > 1})
    if repeated:
        clash = [n for n in order if caches[n].nesting[-1] in repeated]
        raise ValueError(f"FF models {clash} share size(s) {repeated}: keep one per size")
    first = caches[order[0]]
    return ScoreSet(
        name=name,
        kind="ff",
        logits=np.stack([np.asarray(caches[n].logits()[-1]) for n in order]),
        labels=np.asarray(first.labels),
        nesting=sizes,
        class_names=first.class_names,
        class_ids=first.class_ids,
        hierarchy=first.hierarchy,
        sources=tuple(order),
    )


def score_sets(caches: Mapping[str, EmbeddingCache], ff_name: str = FF_NAME) -> dict[str, ScoreSet]:
    """One :class:`ScoreSet` per MRL / MRL-E cache (under its own name) plus the FF-k caches
    stacked under ``ff_name``, in the order the models are given (FF where the first FF
    model is). All caches must be of the same eval split."""
    if not caches:
        raise ValueError("no caches given: pass {model name: EmbeddingCache}")
    _check_same_split(caches)
    ff = {n: c for n, c in caches.items() if c.kind == "ff"}
    if ff_name in caches and caches[ff_name].kind != "ff":
        raise ValueError(f"a non-FF model is named {ff_name!r}: pass another ff_name")
    out: dict[str, ScoreSet] = {}
    for name, cache in caches.items():
        if cache.kind != "ff":
            out[name] = _single(name, cache)
        elif ff_name not in out:
            out[ff_name] = stack_ff(ff, ff_name)
    return out
