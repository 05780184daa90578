"""How Matryoshka is an embedding? The diagnostic over named caches (notebook 08).

The only module of the theme that reads caches. Any cache works: ours (built from a
checkpoint), the authors' (``models.official``) or one imported from someone's arrays
(:mod:`mrl_analysis.cache.importer`; the diagnostic reads features only).

* :func:`study_caches`: the query (evaluation split) and database caches of checkpoints;
* :func:`imported_caches`: the ``query`` / ``database`` caches of ``mrl-analysis import``
  folders;
* :func:`diagnose`: per model and size, prefixes against PCA, random dims and the full
  embedding (:mod:`.prefixes`), the shares of norm and variance in the first dims
  (:mod:`.shares`), a one-line verdict per model and the nested models' prefixes against
  the other embeddings' prefixes and PCA dims (:mod:`.headlines`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import build_caches
from mrl_analysis.cache.reader import EmbeddingCache, open_cache
from mrl_analysis.core.checks import check_int
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import LEVEL, N_BOOT
from mrl_analysis.diagnostic.headlines import comparison_row, comparisons, verdict_row, verdicts
from mrl_analysis.diagnostic.prefixes import PrefixQuality, prefix_quality
from mrl_analysis.diagnostic.shares import energy_shares

__all__ = [
    "Diagnosis",
    "default_models",
    "diagnose",
    "diagnostic_sizes",
    "imported_caches",
    "study_caches",
    "trained_dim",
]


def study_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    eval_split: str = "test",
    database_split: str = "train",
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, EmbeddingCache], dict[str, EmbeddingCache]]:
    """``(query caches, database caches)`` of named checkpoints: built once, then reused."""
    caches = build_caches(
        models,
        dataset,
        [eval_split, database_split],
        cache_root=cache_root,
        data_root=data_root,
        progress=progress,
    )
    queries = {name: per_split[eval_split] for name, per_split in caches.items()}
    return queries, {name: per_split[database_split] for name, per_split in caches.items()}


def imported_caches(
    folders: Mapping[str, str | os.PathLike],
) -> tuple[dict[str, EmbeddingCache], dict[str, EmbeddingCache]]:
    """``(query caches, database caches)`` of folders written by ``mrl-analysis import
    --query`` (each holds ``query/`` and ``database/``), by display name."""
    queries, databases = {}, {}
    for name, folder in folders.items():
        folder = Path(folder)
        queries[name] = open_cache(folder / "query")
        databases[name] = open_cache(folder / "database")
    return queries, databases


def trained_dim(cache: EmbeddingCache) -> int:
    """The width of a cache's representation: the first ``nesting[-1]`` dims, which its
    largest head reads (all ``d`` dims of an imported cache). A backbone wider than the
    nesting (ShuffleNet's 1024 under a nesting up to 512) has further dims that no loss
    trains; counting them as "the full embedding" would compare against noise."""
    return min(int(cache.nesting[-1]), cache.feature_dim)


def default_models(caches: Mapping[str, EmbeddingCache]) -> list[str]:
    """The models worth diagnosing: nested ones (MRL, MRL-E, imported Matryoshka) and the
    widest fixed-feature ones (an FF-k whose k is the widest trained width here); a narrower
    FF-k's few dims say nothing about prefixes."""
    widest = max((trained_dim(c) for c in caches.values()), default=0)
    return [
        name
        for name, cache in caches.items()
        if cache.kind in NESTED_KINDS or trained_dim(cache) == widest
    ]


def diagnostic_sizes(cache: EmbeddingCache, min_dim: int = 2) -> list[int]:
    """Sizes a cache is diagnosed at: a nested model's nesting, else 1, 2, 4, … and its
    :func:`trained_dim` ``d``; from ``min_dim`` up (an L2-normalized 1-d ReLU feature is
    constant)."""
    d = trained_dim(cache)
    if cache.kind in NESTED_KINDS:
        ladder = [int(m) for m in cache.nesting]
    else:
        ladder = sorted({2**e for e in range(int(np.log2(d)) + 1)} | {d})
    return [m for m in ladder if m >= min_dim] or [d]


def _sample(n: int, count: int | None, seed: int) -> np.ndarray:
    """``count`` distinct rows of ``n`` (seeded, sorted), or all of them."""
    if count is None or count >= n:
        return np.arange(n)
    count = check_int(count, "sample count", low=1)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


@dataclass(frozen=True, eq=False)
class Diagnosis:
    """The diagnostic of several models: tidy ``quality`` (:data:`.prefixes.QUALITY_COLUMNS`),
    ``shares`` (:data:`.shares.SHARE_COLUMNS`), ``verdicts``
    (:data:`.headlines.VERDICT_COLUMNS`) and ``comparisons`` (every nested model against
    every other one, :data:`.headlines.COMPARISON_COLUMNS`) tables, the ``setup`` of each
    model, and the bootstrapped outcomes behind them (``details``)."""

    quality: pd.DataFrame
    shares: pd.DataFrame
    verdicts: pd.DataFrame
    comparisons: pd.DataFrame
    setup: pd.DataFrame
    details: dict[str, PrefixQuality] = field(repr=False)


def diagnose(
    query_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache],
    *,
    models: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    min_dim: int = 2,
    n_queries: int | None = 1000,
    n_database: int | None = 10000,
    n_random: int = 5,
    knn_k: int = 1,
    map_k: int = 10,
    metric: str = "map",
    tolerance: float = 0.01,
    small_max: int | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
    progress: bool = True,
) -> Diagnosis:
    """Diagnose ``models`` (default :func:`default_models`) of the named caches.

    Queries are ``n_queries`` rows of each model's query cache, searched in ``n_database``
    rows of its database cache (seeded; ``None``: all), the same rows for every model, so
    models are compared on the same queries. ``sizes`` (default :func:`diagnostic_sizes`;
    always up to the full size) and ``min_dim`` choose the sizes; the verdict uses
    ``metric`` (``"map"``: mAP@``map_k``, or ``"knn"``: ``knn_k``-NN accuracy),
    ``tolerance`` (a fraction) and ``small_max`` (:mod:`.headlines`), as do the
    comparisons of each nested model with each other model.
    """
    names = list(default_models(query_caches) if models is None else models)
    if not names:
        raise ValueError(
            "no model to diagnose: give models=, or caches of a nested model or of a full-size "
            "embedding"
        )
    missing = sorted(n for n in names if n not in query_caches or n not in database_caches)
    if missing:
        raise ValueError(f"models {missing} need both a query and a database cache")
    first_q, first_db = query_caches[names[0]], database_caches[names[0]]
    q_rows = _sample(first_q.num_samples, n_queries, seed)
    db_rows = _sample(first_db.num_samples, n_database, seed + 1)
    quality, shares, rows, setup, details = [], [], [], [], {}
    for name in names:
        query, database = query_caches[name], database_caches[name]
        for cache, first, role in ((query, first_q, "query"), (database, first_db, "database")):
            if not np.array_equal(cache.labels, first.labels):
                raise ValueError(
                    f"the {role} caches of {name!r} and {names[0]!r} hold different samples: "
                    "use caches of the same split for every model"
                )
        if trained_dim(query) != trained_dim(database):
            raise ValueError(f"{name}'s query and database caches have different d")
        d = trained_dim(query)
        grid = (
            diagnostic_sizes(query, min_dim)
            if sizes is None
            else sorted({int(m) for m in sizes if min_dim <= int(m) <= d})
        )
        db_x, q_x = database.features(d)[db_rows], query.features(d)[q_rows]
        result = prefix_quality(
            db_x,
            database.labels[db_rows],
            q_x,
            query.labels[q_rows],
            grid,
            n_random=n_random,
            knn_k=knn_k,
            map_k=map_k,
            n_boot=n_boot,
            level=level,
            seed=seed,
            model=name,
            progress=progress,
        )
        details[name] = result
        quality.append(result.table(name))
        # Shares are statistics of the embedding's distribution: the queries' sample suffices.
        share = energy_shares(q_x, result.sizes, model=name, n_boot=n_boot, seed=seed)
        shares.append(share)
        empty = share[(share["quantity"] == "empty") & (share["truncate_dim"] == result.sizes[0])]
        rows.append(
            verdict_row(
                name,
                result,
                metric=metric,
                tolerance=tolerance,
                small_max=small_max,
                empty_smallest=float(empty["value"].iat[0]),
            )
        )
        setup.append(
            {
                "model": name,
                "kind": query.kind,
                "heads": query.has_heads,
                "dim": d,
                "sizes": result.sizes,
                "queries": len(q_rows),
                "database": len(db_rows),
                "random_draws": n_random,
            }
        )
    nested = [n for n in names if query_caches[n].kind in NESTED_KINDS]
    pairs = [
        comparison_row(n, details[n], r, details[r], metric=metric, small_max=small_max)
        for n in nested
        for r in names
        if r not in nested
    ]
    return Diagnosis(
        quality=pd.concat(quality, ignore_index=True),
        shares=pd.concat(shares, ignore_index=True),
        verdicts=verdicts(rows),
        comparisons=comparisons(pairs),
        setup=pd.DataFrame(setup),
        details=details,
    )
