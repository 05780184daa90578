"""The retrieval study over named models' caches (notebook 06; paper §4.3).

The only module of the theme that reads caches. :func:`retrieval_study` builds (or reuses)
every model's caches of a database split and a query split and hands them to
:func:`evaluate_models`: every model is queried with the same class-stratified subset of
queries (:func:`query_subset`); nested models (MRL, MRL-E) are searched single-shot at each
of their sizes, and the adaptive models run the whole :class:`RetrievalPlan`; a
fixed-feature model FF-k is searched single-shot at its own size ``k``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mrl_analysis.cache.experiment import build_caches
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.core.checks import check_int, check_labels
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.retrieval.index import DEFAULT_INDEX, IndexSpec, Retriever
from mrl_analysis.retrieval.plan import RetrievalPlan
from mrl_analysis.retrieval.tables import evaluate_retrieval, single_shot_table, stack_tables

__all__ = ["RetrievalStudy", "evaluate_models", "query_subset", "retrieval_study"]

_DEFAULT_PLAN = RetrievalPlan()


def query_subset(labels: np.ndarray, n_queries: int | None, seed: int = 0) -> np.ndarray:
    """Sorted row ids of a class-stratified random subset of ``n_queries`` rows.

    All rows when ``n_queries`` is ``None`` or not smaller than their number. The subset
    is stratified by label (scikit-learn's ``train_test_split``) when every class has at
    least two rows and both parts can hold one row per class; otherwise it is uniform.
    """
    y = check_labels(labels, name="labels")
    n = len(y)
    if n_queries is None:
        return np.arange(n)
    n_queries = check_int(n_queries, "n_queries")
    if n_queries >= n:
        return np.arange(n)
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1 (or None for all {n} queries), got {n_queries}")
    _, counts = np.unique(y, return_counts=True)
    can_stratify = counts.min() >= 2 and min(n_queries, n - n_queries) >= len(counts)
    picked, _ = train_test_split(
        np.arange(n),
        train_size=n_queries,
        stratify=y if can_stratify else None,
        random_state=seed,
    )
    return np.sort(picked)


@dataclass(frozen=True, eq=False)
class RetrievalStudy:
    """What :func:`evaluate_models` returns.

    * ``table``: the tidy metric table of every model (:mod:`.tables`);
    * ``indexes``: build time and memory per model, structure and size;
    * ``models``: one row per model: ``kind``, ``nesting``, ``sizes`` (searched),
      ``database_items``, ``query_items``, ``queries`` (used), ``adaptive`` (whether the
      whole plan ran) and ``family`` (its name, or ``"FF"`` for a fixed-feature model).
    """

    table: pd.DataFrame
    indexes: pd.DataFrame
    models: pd.DataFrame

    @property
    def adaptive_models(self) -> list[str]:
        """The models that ran adaptive, funnel and shortlist-ablation retrieval."""
        return list(self.models.loc[self.models["adaptive"], "model"])

    @property
    def families(self) -> dict[str, str]:
        """Model → figure line: FF-k models share one line ``"FF"``."""
        return dict(zip(self.models["model"], self.models["family"], strict=True))


def evaluate_models(
    database_caches: Mapping[str, EmbeddingCache],
    query_caches: Mapping[str, EmbeddingCache],
    *,
    full_models: Collection[str] | None = None,
    n_queries: int | None = None,
    seed: int = 0,
    min_dim: int = 1,
    index: IndexSpec = DEFAULT_INDEX,
    plan: RetrievalPlan = _DEFAULT_PLAN,
    progress: bool = True,
) -> RetrievalStudy:
    """Retrieval for several named models' caches (e.g. database = train, queries = test).

    Every model is queried with the same rows: a class-stratified subset of ``n_queries``
    (:func:`query_subset`; all when ``None``). A nested model (cache kind in
    :data:`~mrl_analysis.core.kinds.NESTED_KINDS`) is searched single-shot at each of its
    nesting sizes from ``min_dim`` up; those named in ``full_models`` (default: every
    nested model) get all of :func:`~mrl_analysis.retrieval.tables.evaluate_retrieval`
    with ``plan`` instead. A fixed-feature model FF-k is searched single-shot at its own
    size ``k`` only. ``index`` says how every shortlist is searched.
    """
    missing = sorted(set(database_caches) ^ set(query_caches))
    if missing:
        raise ValueError(
            f"models {missing} have a database cache or a query cache but not both; give "
            "both mappings the same model names"
        )
    if not query_caches:
        raise ValueError("no models given: pass {name: cache} mappings")
    nested = [name for name, c in query_caches.items() if c.kind in NESTED_KINDS]
    full = set(nested if full_models is None else full_models)
    unknown = sorted(full - set(query_caches))
    if unknown:
        raise ValueError(f"full_models {unknown} are not among the models {list(query_caches)}")
    not_nested = sorted(full - set(nested))
    if not_nested:
        raise ValueError(
            f"full_models {not_nested} are not nested (kinds {NESTED_KINDS}): adaptive "
            "retrieval needs an MRL or MRL-E model"
        )
    first = next(iter(query_caches.values()))
    rows = query_subset(first.labels, n_queries, seed)
    tables, indexes, setup = [], [], []
    for name, queries in query_caches.items():
        database = database_caches[name]
        if not np.array_equal(queries.labels, first.labels):
            raise ValueError(
                f"the query caches of {name!r} and {next(iter(query_caches))!r} hold different "
                "samples (labels differ): embed the same split for every model"
            )
        is_nested = queries.kind in NESTED_KINDS
        if is_nested:
            sizes = [int(m) for m in queries.nesting if int(m) >= min_dim]
        else:
            sizes = [int(queries.nesting[-1])]
        if not sizes:
            raise ValueError(f"{name!r} has no nesting size >= min_dim={min_dim}")
        full_dim = max(int(m) for m in queries.nesting)
        # Normalized at full size, so the full-size search uses this array in place.
        db = database.features(full_dim, normalize=True)
        q = queries.features(full_dim)[rows]
        ql = np.asarray(queries.labels)[rows]
        options = {"model": name, "progress": progress}
        if name in full:
            report = evaluate_retrieval(
                db, database.labels, q, ql, sizes, index=index, plan=plan, **options
            )
            table, built = report.table, report.indexes
        else:
            retriever = Retriever(db, database.labels, index)
            table = single_shot_table(retriever, q, ql, sizes, ks=plan.ks, **options)
            built = retriever.index_table()
        tables.append(table)
        indexes.append(built.assign(model=name))
        setup.append(
            {
                "model": name,
                "kind": queries.kind,
                "nesting": list(queries.nesting),
                "sizes": sizes,
                "database_items": len(database),
                "query_items": len(queries),
                "queries": len(rows),
                "adaptive": name in full,
                "family": name if is_nested else "FF",
            }
        )
        del db, q
    index_table = pd.concat(indexes, ignore_index=True)
    return RetrievalStudy(
        table=stack_tables(tables),
        indexes=index_table[["model", *index_table.columns[:-1]]],
        models=pd.DataFrame(setup),
    )


def retrieval_study(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    database_split: str = "train",
    eval_split: str = "test",
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    adaptive_models: Collection[str] | None = None,
    n_queries: int | None = None,
    seed: int = 0,
    min_dim: int = 1,
    index: IndexSpec = DEFAULT_INDEX,
    plan: RetrievalPlan = _DEFAULT_PLAN,
    progress: bool = True,
) -> RetrievalStudy:
    """Notebook 06 from checkpoints: caches of ``database_split`` and ``eval_split`` for every
    model of ``models`` (built once, then reused), then :func:`evaluate_models`.

    ``adaptive_models`` (the ``full_models`` of :func:`evaluate_models`) defaults to the
    first MRL / MRL-E model only: adaptive, funnel and ablation runs are the slow part.
    """
    caches = build_caches(
        models,
        dataset,
        [database_split, eval_split],
        cache_root=cache_root,
        data_root=data_root,
        progress=progress,
    )
    databases = {name: per_split[database_split] for name, per_split in caches.items()}
    queries = {name: per_split[eval_split] for name, per_split in caches.items()}
    if adaptive_models is None:
        adaptive_models = [n for n, c in queries.items() if c.kind in NESTED_KINDS][:1]
    return evaluate_models(
        databases,
        queries,
        full_models=adaptive_models,
        n_queries=n_queries,
        seed=seed,
        min_dim=min_dim,
        index=index,
        plan=plan,
        progress=progress,
    )
