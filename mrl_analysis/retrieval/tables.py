"""Tidy retrieval tables: single-shot, adaptive, funnel and shortlist ablation (paper §4.3).

Every builder takes a :class:`~mrl_analysis.retrieval.index.Retriever` (database and its
labels) and queries, and returns rows of :data:`TABLE_COLUMNS`: one per method ×
``(Ds, Dr, K)`` × metric × ``k``, values as fractions in ``[0, 1]``, with
``mflops_per_query`` (theoretical, :func:`~mrl_analysis.retrieval.metrics.retrieval_mflops`)
and ``ms_per_query`` (measured wall-clock over the whole query batch, index building
excluded; see :meth:`Retriever.index_table` for build time and memory).
:func:`evaluate_retrieval` runs all four for one model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mrl_analysis.core.checks import (
    check_choice,
    check_ks,
    check_labels,
    check_sizes,
    check_table,
)
from mrl_analysis.retrieval.index import DEFAULT_INDEX, IndexSpec, Retriever
from mrl_analysis.retrieval.metrics import (
    DEFAULT_KS,
    METRICS,
    retrieval_metrics,
    retrieval_mflops,
)
from mrl_analysis.retrieval.plan import DEFAULT_ABLATION_SIZES, Funnel, RetrievalPlan

__all__ = [
    "TABLE_COLUMNS",
    "RetrievalReport",
    "adaptive_table",
    "evaluate_retrieval",
    "funnel_table",
    "select",
    "shortlist_ablation_table",
    "single_shot_table",
    "stack_tables",
]

TABLE_COLUMNS: list[str] = [
    "model",
    "method",
    "index",
    "Ds",
    "Dr",
    "K",
    "cascade",
    "metric",
    "k",
    "value",
    "mflops_per_query",
    "ms_per_query",
]
_DEFAULT_PLAN = RetrievalPlan()


def select(table: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    """The rows of ``metric@k`` of a retrieval table (``k`` is 1 for ``top1``)."""
    check_choice(metric, METRICS, "metric")
    check_table(table, TABLE_COLUMNS, "evaluate_retrieval or evaluate_models")
    k = 1 if metric == "top1" else int(k)
    sel = table[(table["metric"] == metric) & (table["k"] == k)]
    if sel.empty:
        raise ValueError(
            f"the table has no rows for {metric}@{k}; available ks: "
            f"{sorted(table.loc[table['metric'] == metric, 'k'].unique())}"
        )
    return sel


def stack_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Retrieval tables stacked into one, columns :data:`TABLE_COLUMNS`, integer sizes."""
    if not frames:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    out = pd.concat(frames, ignore_index=True)[TABLE_COLUMNS]
    for col in ("Ds", "Dr", "K", "k"):
        out[col] = out[col].astype("Int64")
    return out


class _Run:
    """One model's queries against a retriever: times a ranking and scores it as rows."""

    def __init__(
        self,
        retriever: Retriever,
        queries: np.ndarray,
        query_labels: np.ndarray,
        ks: Iterable[int],
        model: str,
    ) -> None:
        if retriever.labels is None:
            raise ValueError("the Retriever has no labels: pass Retriever(database, labels)")
        self.retriever, self.model, self.queries = retriever, model, np.asarray(queries)
        n = self.queries.shape[0] if self.queries.ndim == 2 else None
        self.labels = check_labels(query_labels, n, "query_labels")
        self.ks = check_ks(ks)

    def timed(self, fn: Callable[..., np.ndarray], *args: object) -> tuple[np.ndarray, float]:
        """``fn(queries, *args)`` and the seconds it took."""
        start = time.perf_counter()
        out = fn(self.queries, *args)
        return out, time.perf_counter() - start

    def rows(
        self,
        ranking: np.ndarray,
        seconds: float,
        method: str,
        ds: int,
        stages: Sequence[tuple[int, int]] = (),
        cascade: str = "",
    ) -> pd.DataFrame:
        """Metrics of ``ranking`` at the ks it can score, with the run's keys and costs.

        ``stages``: the ``(Dr, K)`` rerank stages (none for single-shot); ``Dr`` is the last
        stage's size, ``K`` the first stage's shortlist length.
        """
        r = self.retriever
        ks = [k for k in self.ks if k <= ranking.shape[1]] or [1]  # top-1 is always scored
        out = retrieval_metrics(ranking, self.labels, r.labels, ks)
        dims, lengths = [d for d, _ in stages], [k for _, k in stages]
        out.insert(0, "model", self.model)
        out.insert(1, "method", method)
        out.insert(2, "index", r.spec.kind)
        out.insert(3, "Ds", int(ds))
        out.insert(4, "Dr", int(dims[-1]) if stages else pd.NA)
        out.insert(5, "K", int(lengths[0]) if stages else pd.NA)
        out.insert(6, "cascade", cascade)
        out["mflops_per_query"] = retrieval_mflops(r.size, ds, dims, lengths)
        out["ms_per_query"] = 1000.0 * seconds / max(len(ranking), 1)
        return out


def single_shot_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    nesting: Sequence[int],
    *,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Single-shot retrieval at every size in ``nesting`` (paper Table 8 / Figure 7).

    One search of ``max(ks)`` neighbours per size (``Ds`` = the size; ``Dr``, ``K`` empty).
    """
    run = _Run(retriever, queries, query_labels, ks, model)
    k_search = min(run.ks[-1], retriever.size)
    frames = []
    for m in tqdm(list(nesting), desc="single-shot", disable=not progress):
        retriever.prepare(m)
        nb, seconds = run.timed(retriever.search, m, k_search)
        frames.append(run.rows(nb, seconds, "single-shot", m))
    return stack_tables(frames)


def adaptive_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    shortlist_dims: Sequence[int],
    rerank_dims: Sequence[int] | None = None,
    *,
    shortlist_size: int = 200,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Adaptive retrieval for every pair ``Ds < Dr`` (paper Table 11 / Figure 8).

    ``rerank_dims`` defaults to ``shortlist_dims`` plus the full size. Each shortlist is
    searched once per ``Ds`` and reranked at every larger ``Dr``; ``ms_per_query`` is
    shortlist time plus that rerank's time.
    """
    run = _Run(retriever, queries, query_labels, ks, model)
    k_short = retriever.check_k(shortlist_size, "shortlist_size")
    rerank = sorted(
        {int(d) for d in (rerank_dims if rerank_dims is not None else shortlist_dims)}
        | ({retriever.dim} if rerank_dims is None else set())
    )
    frames = []
    for ds in tqdm(list(shortlist_dims), desc="adaptive", disable=not progress):
        retriever.prepare(ds)
        shortlist, t_short = run.timed(retriever.search, ds, k_short)
        for dr in (d for d in rerank if d > ds):
            retriever.prepare(dr, search=False)
            nb, t_rerank = run.timed(retriever.rerank, shortlist, dr)
            frames.append(run.rows(nb, t_short + t_rerank, "adaptive", ds, [(dr, k_short)]))
    return stack_tables(frames)


def funnel_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    funnels: Sequence[Funnel],
    *,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Funnel retrieval for each funnel (paper Table 13). ``Dr`` is the last rerank size,
    ``K`` the first shortlist length, ``cascade`` the funnel's label."""
    run = _Run(retriever, queries, query_labels, ks, model)
    frames = []
    for f in tqdm(list(funnels), desc="funnel", disable=not progress):
        retriever.prepare(f.shortlist_dim)
        for d in f.rerank_dims:
            retriever.prepare(d, search=False)
        nb, seconds = run.timed(retriever.funnel, f)
        stages = list(zip(f.rerank_dims, f.shortlist_sizes, strict=True))
        frames.append(run.rows(nb, seconds, "funnel", f.shortlist_dim, stages, f.label))
    return stack_tables(frames)


def shortlist_ablation_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    shortlist_dim: int,
    rerank_dim: int | None = None,
    shortlist_sizes: Sequence[int] = DEFAULT_ABLATION_SIZES,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Adaptive retrieval over shortlist lengths (paper Tables 30-31), method
    ``"shortlist-ablation"``. Lengths above the database size are skipped."""
    run = _Run(retriever, queries, query_labels, ks, model)
    dr = retriever.check_dim(rerank_dim)
    sizes = [int(k) for k in shortlist_sizes if int(k) <= retriever.size]
    retriever.prepare(shortlist_dim)
    retriever.prepare(dr, search=False)
    frames = []
    for k_short in tqdm(sizes, desc="shortlist ablation", disable=not progress):
        nb, seconds = run.timed(retriever.adaptive, shortlist_dim, dr, k_short)
        frames.append(run.rows(nb, seconds, "shortlist-ablation", shortlist_dim, [(dr, k_short)]))
    return stack_tables(frames)


@dataclass(frozen=True, eq=False)
class RetrievalReport:
    """What :func:`evaluate_retrieval` returns: the tidy metric table and the index table."""

    table: pd.DataFrame
    indexes: pd.DataFrame


def evaluate_retrieval(
    database: np.ndarray,
    database_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    nesting: Sequence[int],
    *,
    model: str = "model",
    index: IndexSpec = DEFAULT_INDEX,
    plan: RetrievalPlan = _DEFAULT_PLAN,
    progress: bool = True,
) -> RetrievalReport:
    """Everything ``plan`` asks for one model: single-shot at every size, adaptive for
    every ``Ds < Dr`` in ``nesting``, the plan's funnels and its shortlist-length ablation
    reranked at full size. The full size is added to ``nesting`` when missing; shortlist
    lengths are capped at the database size. ``index`` says how shortlists are searched."""
    retriever = Retriever(database, database_labels, index)
    sizes = check_sizes([*nesting, retriever.dim], retriever.dim, "nesting")
    common = {"ks": plan.ks, "model": model, "progress": progress}
    ablation = plan.ablation_size(sizes)
    frames = [
        single_shot_table(retriever, queries, query_labels, sizes, **common),
        adaptive_table(
            retriever,
            queries,
            query_labels,
            sizes[:-1],
            shortlist_size=min(plan.shortlist_size, retriever.size),
            **common,
        ),
        funnel_table(
            retriever, queries, query_labels, plan.funnels(sizes, retriever.size), **common
        ),
    ]
    if ablation < retriever.dim:
        frames.append(
            shortlist_ablation_table(
                retriever, queries, query_labels, ablation, None, plan.ablation_sizes, **common
            )
        )
    table = stack_tables([f for f in frames if len(f)])
    return RetrievalReport(table=table, indexes=retriever.index_table())
