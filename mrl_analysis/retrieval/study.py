"""The retrieval study over named models' caches (notebook 06; paper §4.3).

The only module of the theme that reads caches. :func:`retrieval_study` builds (or reuses)
every model's caches of a database split and a query split and hands them to
:func:`evaluate_models`: every model is queried with the same class-stratified subset of
queries (:func:`query_subset`); nested models (MRL, MRL-E) are searched single-shot at each
of their sizes, and the adaptive models run the whole :class:`RetrievalPlan`; a
fixed-feature model FF-k is searched single-shot at its own size ``k``.
:func:`findings` states the paper's finding (f) on the caches of a study.
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
from mrl_analysis.core.checks import check_fraction, check_int, check_labels
from mrl_analysis.core.findings import finding, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import LEVEL, N_BOOT, bootstrap_means
from mrl_analysis.retrieval.index import DEFAULT_INDEX, IndexSpec, Retriever
from mrl_analysis.retrieval.metrics import query_metrics, retrieval_mflops
from mrl_analysis.retrieval.plan import RetrievalPlan, nearest_size
from mrl_analysis.retrieval.tables import evaluate_retrieval, single_shot_table, stack_tables

__all__ = [
    "CLAIM_F",
    "FINDING_F",
    "RetrievalStudy",
    "evaluate_models",
    "findings",
    "query_subset",
    "retrieval_study",
]

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
    min_dim = check_int(min_dim, "min_dim", low=1)
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


# --------------------------------------------------------------------------- finding (f)

#: The paper's finding (f) (§4.3, Figure 8, Table 11: a 16-d shortlist reranked at full
#: size matches full-size retrieval at up to 128× fewer MFLOPs).
FINDING_F = "f"
CLAIM_F = (
    "adaptive retrieval with a small shortlist size matches full-size retrieval at a fraction "
    "of the cost"
)


def _finding_model(caches: Mapping[str, EmbeddingCache], model: str | None) -> str | None:
    """``model``, or the first ``"mrl"`` cache, else the first nested one (None: none)."""
    if model is not None:
        if model not in caches:
            raise ValueError(f"model {model!r} is not among the caches {sorted(caches)}")
        return model
    ranked = [n for n, c in caches.items() if c.kind == "mrl"]
    ranked += [n for n, c in caches.items() if c.kind in NESTED_KINDS]
    return ranked[0] if ranked else None


def findings(
    database_caches: Mapping[str, EmbeddingCache],
    query_caches: Mapping[str, EmbeddingCache],
    *,
    model: str | None = None,
    shortlist_dim: int | None = None,
    shortlist_size: int = 200,
    k: int = 10,
    tolerance: float = 0.01,
    n_queries: int | None = 1000,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> list[dict]:
    """Finding (f), "adaptive retrieval with a small shortlist size matches full-size
    retrieval at a fraction of the cost", as one row of
    :func:`mrl_analysis.core.findings.finding`.

    ``database_caches`` / ``query_caches``: named caches of a study's database split (e.g.
    train) and query split (e.g. test), as notebook 06 has them. Measured on ``model``
    (default: the first ``"mrl"`` model, else the first nested one; without either, or
    with a model of one size, the row is ``unmeasured``) with ``n_queries`` queries (the
    class-stratified subset of :func:`query_subset`; ``None``: all).

    Effect (a fraction): per query, AP@``k`` of adaptive retrieval (a shortlist of
    ``shortlist_size`` by exact search at ``Ds`` = ``shortlist_dim``, default the nesting
    size nearest 16 below the full size ``d``, reranked exactly at ``d``) minus AP@``k`` of
    exact single-shot retrieval at ``d`` (the authors' AP of :mod:`.metrics`), averaged over
    the queries: mAP@``k`` adaptive − mAP@``k`` single-shot. Interval: the ``level``
    percentile interval of the paired bootstrap over queries (``n_boot`` resamples of the
    per-query differences). Threshold ``-tolerance``, direction "above": the finding holds
    when the whole interval lies above ``-tolerance``, i.e. adaptive loses less than
    ``tolerance`` of mAP. The cost ratio in the claim is the paper's theoretical one,
    ``d·N / (Ds·N + d·K)`` MFLOPs per query (deterministic, unlike measured time).
    """
    k = check_int(k, "k", low=1)
    shortlist_size = check_int(shortlist_size, "shortlist_size", low=k)
    tolerance = check_fraction(tolerance, "tolerance")
    effect = f"mAP@{k} adaptive − mAP@{k} single-shot at full size (fraction; paired over queries)"
    name = _finding_model(query_caches, model)
    if name is None:
        reason = "no MRL or MRL-E model in this study: pass model= to measure another"
        return [unmeasured(FINDING_F, CLAIM_F, effect, reason)]
    if name not in database_caches:
        raise ValueError(f"model {name!r} has a query cache but no database cache")
    queries, database = query_caches[name], database_caches[name]
    full = max(int(m) for m in queries.nesting)
    smaller = [int(m) for m in queries.nesting if int(m) < full]
    if shortlist_dim is None:
        if not smaller:
            reason = f"{name} has one size ({full}): there is no smaller size to shortlist at"
            return [unmeasured(FINDING_F, CLAIM_F, f"{effect}, {name}", reason)]
        shortlist_dim = nearest_size(smaller, 16)
    ds = check_int(shortlist_dim, "shortlist_dim", low=1, high=full - 1)
    rows = query_subset(queries.labels, n_queries, seed)
    retriever = Retriever(database.features(full, normalize=True), database.labels)
    shortlist_size = min(shortlist_size, retriever.size)
    q, labels = queries.features(full)[rows], np.asarray(queries.labels)[rows]
    rankings = (retriever.adaptive(q, ds, None, shortlist_size), retriever.search(q, None, k))
    ap = []
    for ranking in rankings:
        keys, values = query_metrics(ranking[:, :k], labels, retriever.labels, [k])
        ap.append(values[keys.index(("map", k))])
    boot = bootstrap_means(ap[0] - ap[1], n_boot, level=level, seed=seed)
    low, high = boot.interval()
    n = retriever.size
    ratio = retrieval_mflops(n, full) / retrieval_mflops(n, ds, [full], [shortlist_size])
    claim = (
        f"{CLAIM_F} ({name}: Ds={ds} shortlist of K={shortlist_size} reranked at d={full} vs "
        f"single-shot at d={full}, {ratio:.1f}× fewer MFLOPs/query)"
    )
    detail = (
        f"{effect}, {name}, {len(rows)} queries over {n} items: mAP@{k} "
        f"{ap[0].mean():.4f} vs {ap[1].mean():.4f}"
    )
    return [
        finding(
            FINDING_F,
            claim,
            detail,
            float(boot.mean[0]),
            float(low[0]),
            float(high[0]),
            threshold=-tolerance,
        )
    ]
