"""Tidy retrieval tables: single-shot, adaptive, funnel, shortlist ablation and the frontier
(paper §4.3; AdANNS).

Every builder takes a :class:`~mrl_analysis.retrieval.index.Retriever` (database and its
labels) and queries, and returns rows of :data:`TABLE_COLUMNS`: one per method ×
configuration × metric × ``k``. Values are fractions in ``[0, 1]``: the mean over queries
with its bootstrap interval over queries (``ci_low``, ``ci_high``; :mod:`.metrics`). The
metrics include ``nn_recall`` (k-NN recall against the exact full-size neighbours, the ANN
view) next to the label metrics. Costs per configuration: ``mflops_per_query`` (the paper's
theoretical exact-search cost, :func:`~mrl_analysis.retrieval.metrics.retrieval_mflops`; NaN
for faiss peers), ``ms_per_query`` (measured wall-clock over the whole query batch, index
building excluded; see :meth:`Retriever.index_table` for build time and memory) and
``bytes_per_vector`` (what the search keeps per database vector, :meth:`Retriever.
pipeline_bytes`). ``index`` is the shortlist's structure and codec (``"faiss"`` for a
peer), ``config`` its settings.

Methods: ``single-shot`` (one search at a size), ``adaptive`` (shortlist at ``Ds``, rerank
at ``Dr``), ``funnel``, ``shortlist-ablation``, and the frontier's ``exact`` (exact
single-shot at full size: the reference and the source of the exact neighbours),
``pipeline`` (an MRL :class:`~mrl_analysis.retrieval.plan.Pipeline`) and ``peer`` (a
faiss-native :class:`~mrl_analysis.retrieval.plan.PeerSpec`). :func:`evaluate_retrieval`
runs what a :class:`~mrl_analysis.retrieval.plan.RetrievalPlan` asks for one model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import (
    check_choice,
    check_int,
    check_ks,
    check_labels,
    check_sizes,
    check_table,
)
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.stats import N_BOOT
from mrl_analysis.retrieval.index import Retriever
from mrl_analysis.retrieval.metrics import (
    DEFAULT_KS,
    METRICS,
    retrieval_metrics,
    retrieval_mflops,
)
from mrl_analysis.retrieval.plan import (
    DEFAULT_ABLATION_SIZES,
    DEFAULT_INDEX,
    Funnel,
    IndexSpec,
    PeerSpec,
    Pipeline,
    RetrievalPlan,
)

__all__ = [
    "TABLE_COLUMNS",
    "RetrievalReport",
    "adaptive_table",
    "evaluate_retrieval",
    "frontier_table",
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
    "config",
    "Ds",
    "Dr",
    "K",
    "cascade",
    "metric",
    "k",
    "value",
    "ci_low",
    "ci_high",
    "mflops_per_query",
    "ms_per_query",
    "bytes_per_vector",
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


def _timed(
    fn: Callable[..., np.ndarray], *args: object, repeats: int = 1
) -> tuple[np.ndarray, float]:
    """``fn(*args)`` and the seconds it took (the best of ``repeats`` runs)."""
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


class _Run:
    """One model's queries against a retriever: times a ranking and scores it as rows.

    ``exact``: the exact full-size neighbours of the queries (``nn_recall``'s truth),
    searched here unless given.
    """

    def __init__(
        self,
        retriever: Retriever,
        queries: np.ndarray,
        query_labels: np.ndarray,
        ks: Iterable[int],
        model: str,
        exact: np.ndarray | None,
        n_boot: int | None,
    ) -> None:
        if retriever.labels is None:
            raise ValueError("the Retriever has no labels: pass Retriever(database, labels)")
        self.retriever, self.model, self.queries = retriever, model, np.asarray(queries)
        n = self.queries.shape[0] if self.queries.ndim == 2 else None
        self.labels = check_labels(query_labels, n, "query_labels")
        self.ks = check_ks(ks)
        self.n_boot = n_boot
        self.k_search = min(self.ks[-1], retriever.size)
        if exact is None:
            exact = retriever.search(self.queries, None, self.k_search, DEFAULT_INDEX)
        elif np.shape(exact)[0] != len(self.labels):
            raise ValueError(f"exact has {np.shape(exact)[0]} rows for {len(self.labels)} queries")
        self.exact = exact

    def timed(
        self, fn: Callable[..., np.ndarray], *args: object, repeats: int = 1
    ) -> tuple[np.ndarray, float]:
        """``fn(queries, *args)`` and the seconds it took (the best of ``repeats`` runs)."""
        return _timed(fn, self.queries, *args, repeats=repeats)

    def rows(
        self,
        ranking: np.ndarray,
        seconds: float,
        method: str,
        ds: int,
        stages: Sequence[tuple[int, int]] = (),
        cascade: str = "",
        *,
        index: IndexSpec | None = None,
        peer: PeerSpec | None = None,
    ) -> pd.DataFrame:
        """Metrics of ``ranking`` at the ks it can score, with the run's keys and costs.

        ``stages``: the ``(Dr, K)`` rerank stages (none for single-shot); ``Dr`` is the last
        stage's size, ``K`` the first stage's shortlist length. ``index``: the shortlist's
        spec (default: the retriever's); ``peer``: the faiss-native pipeline that ranked.
        """
        r = self.retriever
        spec = r.spec if index is None else index
        ks = [k for k in self.ks if k <= ranking.shape[1]] or [1]  # top-1 is always scored
        out = retrieval_metrics(
            ranking, self.labels, r.labels, ks, exact=self.exact, n_boot=self.n_boot
        )
        dims, lengths = [d for d, _ in stages], [k for _, k in stages]
        if peer is not None:
            label, config, nbytes = "faiss", peer.label, r.peer_bytes(peer)
            mflops = math.nan
        else:
            label, config = spec.label, spec.describe(ds, r.size)
            nbytes = r.pipeline_bytes(ds, tuple(dims), spec)
            mflops = retrieval_mflops(r.size, ds, dims, lengths)
        out.insert(0, "model", self.model)
        out.insert(1, "method", method)
        out.insert(2, "index", label)
        out.insert(3, "config", config)
        out.insert(4, "Ds", int(ds))
        out.insert(5, "Dr", int(dims[-1]) if stages else pd.NA)
        out.insert(6, "K", int(lengths[0]) if stages else pd.NA)
        out.insert(7, "cascade", cascade)
        out["mflops_per_query"] = mflops
        out["ms_per_query"] = 1000.0 * seconds / max(len(ranking), 1)
        out["bytes_per_vector"] = nbytes
        return out


def single_shot_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    nesting: Sequence[int],
    *,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    exact: np.ndarray | None = None,
    n_boot: int | None = N_BOOT,
    progress: bool = True,
) -> pd.DataFrame:
    """Single-shot retrieval at every size in ``nesting`` (paper Table 8 / Figure 7).

    One search of ``max(ks)`` neighbours per size (``Ds`` = the size; ``Dr``, ``K`` empty).
    ``exact``: the exact full-size neighbours (searched when not given); ``n_boot``: the
    bootstrap resamples of the intervals (``None``: none).
    """
    run = _Run(retriever, queries, query_labels, ks, model, exact, n_boot)
    frames = []
    for m in progress_bar(list(nesting), desc=f"single-shot · {model}", disable=not progress):
        retriever.prepare(m)
        nb, seconds = run.timed(retriever.search, m, run.k_search)
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
    exact: np.ndarray | None = None,
    n_boot: int | None = N_BOOT,
    progress: bool = True,
) -> pd.DataFrame:
    """Adaptive retrieval for every pair ``Ds < Dr`` (paper Table 11 / Figure 8).

    ``rerank_dims`` defaults to ``shortlist_dims`` plus the full size. Each shortlist is
    searched once per ``Ds`` and reranked at every larger ``Dr``; ``ms_per_query`` is
    shortlist time plus that rerank's time.
    """
    run = _Run(retriever, queries, query_labels, ks, model, exact, n_boot)
    k_short = retriever.check_k(shortlist_size, "shortlist_size")
    rerank = sorted(
        {
            check_int(d, "rerank_dims entry")
            for d in (rerank_dims if rerank_dims is not None else shortlist_dims)
        }
        | ({retriever.dim} if rerank_dims is None else set())
    )
    frames = []
    for ds in progress_bar(list(shortlist_dims), desc=f"adaptive · {model}", disable=not progress):
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
    exact: np.ndarray | None = None,
    n_boot: int | None = N_BOOT,
    progress: bool = True,
) -> pd.DataFrame:
    """Funnel retrieval for each funnel (paper Table 13). ``Dr`` is the last rerank size,
    ``K`` the first shortlist length, ``cascade`` the funnel's label."""
    run = _Run(retriever, queries, query_labels, ks, model, exact, n_boot)
    frames = []
    for f in progress_bar(list(funnels), desc=f"funnel · {model}", disable=not progress):
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
    exact: np.ndarray | None = None,
    n_boot: int | None = N_BOOT,
    progress: bool = True,
) -> pd.DataFrame:
    """Adaptive retrieval over shortlist lengths (paper Tables 30-31), method
    ``"shortlist-ablation"``. Lengths above the database size are skipped."""
    run = _Run(retriever, queries, query_labels, ks, model, exact, n_boot)
    dr = retriever.check_dim(rerank_dim)
    lengths = (check_int(k, "shortlist_sizes entry", low=1) for k in shortlist_sizes)
    sizes = [k for k in lengths if k <= retriever.size]
    retriever.prepare(shortlist_dim)
    retriever.prepare(dr, search=False)
    frames = []
    for k_short in progress_bar(sizes, desc=f"shortlist ablation · {model}", disable=not progress):
        nb, seconds = run.timed(retriever.adaptive, shortlist_dim, dr, k_short)
        frames.append(run.rows(nb, seconds, "shortlist-ablation", shortlist_dim, [(dr, k_short)]))
    return stack_tables(frames)


def frontier_table(
    retriever: Retriever,
    queries: np.ndarray,
    query_labels: np.ndarray,
    pipelines: Sequence[Pipeline] = (),
    peers: Sequence[PeerSpec] = (),
    *,
    ks: Iterable[int] = DEFAULT_KS,
    model: str = "model",
    repeats: int = 1,
    n_boot: int | None = N_BOOT,
    progress: bool = True,
) -> pd.DataFrame:
    """The frontier: exact single-shot at full size (method ``"exact"``, the reference), each
    MRL ``pipeline`` and each faiss-native ``peer``, one configuration per row group.

    The exact run's neighbours are the truth of every row's ``nn_recall``. Indexes are built
    before timing; ``ms_per_query`` is the best of ``repeats`` runs. A peer returns
    ``max(ks)`` results; a pipeline its ``K``-long reranked shortlist.
    """
    repeats = check_int(repeats, "repeats", low=1)
    exact_spec = _exact_spec(retriever)
    ks = check_ks(ks)
    retriever.prepare(None, index=exact_spec)
    k_search = min(ks[-1], retriever.size)
    # The reference run is timed like the others and its neighbours are the truth.
    search = retriever.search
    exact, seconds = _timed(search, queries, None, k_search, exact_spec, repeats=repeats)
    run = _Run(retriever, queries, query_labels, ks, model, exact, n_boot)
    frames = [run.rows(exact, seconds, "exact", retriever.dim, index=exact_spec)]
    for p in progress_bar(list(pipelines), desc=f"frontier · {model}", disable=not progress):
        retriever.prepare_pipeline(p)
        nb, seconds = run.timed(retriever.pipeline, p, repeats=repeats)
        dr = retriever.check_dim(p.rerank_dim)
        stages = [(dr, p.shortlist_size)]
        frames.append(run.rows(nb, seconds, "pipeline", p.shortlist_dim, stages, index=p.index))
    for peer in progress_bar(list(peers), desc=f"faiss peers · {model}", disable=not progress):
        retriever.prepare_peer(peer)
        nb, seconds = run.timed(retriever.peer, peer, run.k_search, repeats=repeats)
        frames.append(run.rows(nb, seconds, "peer", retriever.dim, peer=peer))
    return stack_tables(frames)


def _exact_spec(retriever: Retriever) -> IndexSpec:
    """Exact search with the retriever's runtime settings (threads, batch size)."""
    return IndexSpec(threads=retriever.spec.threads, batch_size=retriever.spec.batch_size)


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
    every ``Ds < Dr`` in ``nesting``, the plan's funnels, its shortlist-length ablation
    reranked at full size and, with ``plan.frontier``, the frontier (:func:`frontier_table`).
    The full size is added to ``nesting`` when missing; shortlist lengths are capped at the
    database size. ``index`` says how shortlists are searched. The exact full-size
    neighbours (every row's ``nn_recall`` truth) are searched once."""
    retriever = Retriever(database, database_labels, index)
    sizes = check_sizes([*nesting, retriever.dim], retriever.dim, "nesting")
    k_exact = min(max(plan.ks), retriever.size)
    exact = retriever.search(queries, None, k_exact, _exact_spec(retriever))
    common = {
        "ks": plan.ks,
        "model": model,
        "exact": exact,
        "n_boot": plan.n_boot,
        "progress": progress,
    }
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
    if plan.frontier:
        pipelines, peers = plan.frontier_runs(sizes, retriever.size)
        frames.append(
            frontier_table(
                retriever,
                queries,
                query_labels,
                pipelines,
                peers,
                ks=plan.ks,
                model=model,
                n_boot=plan.n_boot,
                progress=progress,
            )
        )
    table = stack_tables([f for f in frames if len(f)])
    return RetrievalReport(table=table, indexes=retriever.index_table())
