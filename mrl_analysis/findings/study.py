"""The paper's findings on the models at hand: every theme's ``findings`` in one table.

:func:`paper_findings` calls, with the same model and bootstrap settings, the findings
function of each theme and returns their rows as one table in the format of
:func:`mrl_analysis.core.findings.findings_table` (one row per finding, ``a`` to ``h``).
Each theme reads the caches itself, with cheap settings of its own (a query subset, a few
splits), so that the whole table takes about a minute on the demo.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from mrl_analysis.accuracy import study as accuracy
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.core.findings import findings_table, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import LEVEL, N_BOOT
from mrl_analysis.fewshot import study as fewshot
from mrl_analysis.retrieval import study as retrieval
from mrl_analysis.routing import study as routing
from mrl_analysis.superclass import study as superclass

Caches = Mapping[str, EmbeddingCache]


@dataclass(frozen=True)
class _Theme:
    """One theme's part of the table: the findings it states and how to ask for them."""

    name: str
    keys: tuple[str, ...]
    claims: tuple[str, ...]
    #: ``measure(eval_caches, database_caches, model, n_boot, level, seed) -> rows``
    measure: Callable[[Caches, Caches | None, str, int, float, int], list[dict]]


def _retrieval(
    evals: Caches, databases: Caches | None, model: str, n_boot: int, level: float, seed: int
) -> list[dict]:
    if databases is None:
        raise ValueError("no database split was given: retrieval searches one")
    return retrieval.findings(databases, evals, model=model, n_boot=n_boot, level=level, seed=seed)


THEMES = (
    _Theme(
        "accuracy",
        ("a", "b"),
        (accuracy.CLAIM_A, accuracy.CLAIM_B),
        lambda ev, db, m, b, lv, s: accuracy.findings(ev, db, model=m, n_boot=b, level=lv, seed=s),
    ),
    _Theme(
        "routing",
        ("c", "d"),
        (routing.CLAIM_C, routing.CLAIM_D),
        lambda ev, db, m, b, lv, s: routing.findings(ev, model=m, n_boot=b, level=lv),
    ),
    _Theme(
        "superclass",
        ("e", "h"),
        (superclass.CLAIM_E, superclass.CLAIM_H),
        lambda ev, db, m, b, lv, s: superclass.findings(ev, model=m, n_boot=b, level=lv),
    ),
    _Theme("retrieval", (retrieval.FINDING_F,), (retrieval.CLAIM_F,), _retrieval),
    _Theme(
        "fewshot",
        (fewshot.FINDING_G,),
        (fewshot.CLAIM_G,),
        lambda ev, db, m, b, lv, s: fewshot.findings(ev, model=m, n_boot=b, level=lv, seed=s),
    ),
)


def default_model(caches: Caches) -> str | None:
    """The model the findings are about: the first MRL cache, else the first MRL-E one."""
    for kinds in (("mrl",), NESTED_KINDS):
        for name, cache in caches.items():
            if cache.kind in kinds:
                return name
    return None


def paper_findings(
    eval_caches: Caches,
    database_caches: Caches | None = None,
    *,
    model: str | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Findings (a)-(h) of the paper on ``model`` (default :func:`default_model`), one row
    each, in the columns of :data:`mrl_analysis.core.findings.COLUMNS`.

    ``eval_caches``: ``{display name: EmbeddingCache}`` of the study's eval split (``model``
    and its baselines, e.g. the FF-k models); ``database_caches``: the same names on the
    split the k-NN and retrieval findings search (e.g. train), or None (then (b) and (f)
    cannot be measured). ``n_boot``, ``level`` and ``seed`` go to every theme, so all
    intervals are percentile bootstrap intervals at the same level.

    A theme that refuses its inputs with a ``ValueError`` (too few classes for few-shot
    episodes, a model without a database cache, ...) gives "cannot be measured here" rows
    whose ``reason`` is its message. ``table.attrs["seconds"]`` holds each theme's time.
    """
    if model is None:
        model = default_model(eval_caches)
    if model is None:  # the themes state the missing model themselves
        model = "MRL"
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    for theme in THEMES:
        start = time.perf_counter()
        try:
            rows += theme.measure(eval_caches, database_caches, model, n_boot, level, seed)
        except ValueError as err:
            rows += [
                unmeasured(key, claim, f"{theme.name} theme, {model}", f"{theme.name}: {err}")
                for key, claim in zip(theme.keys, theme.claims, strict=True)
            ]
        seconds[theme.name] = time.perf_counter() - start
    table = findings_table(rows)
    table.attrs["seconds"] = seconds
    return table
