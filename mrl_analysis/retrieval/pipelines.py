"""Image retrieval with nested representations: single-shot, adaptive and funnel (paper §4.3).

A *database* (one split's features, e.g. train) is searched with *queries* (another split,
e.g. test). At every size ``m`` both are truncated to their first ``m`` dimensions and
L2-normalized; neighbours are ranked by L2 distance, as in the paper (Appendix E).

* **Single-shot**: the ``k`` nearest neighbours at one size, from faiss (exact flat search
  or HNSW, ``M = 32`` by default).
* **Adaptive** (AR): a shortlist of ``K`` (default 200) at a small size ``Ds``, reranked
  exactly at a larger size ``Dr``.
* **Funnel**: a shortlist at ``Ds``, then a cascade of reranks, stage ``i`` reranking the
  top ``K_i`` of the current ranking at size ``Dr_i`` (e.g. ``200→100→50→25→10`` at
  ``32→64→128→256→full``). Candidates a stage does not rerank keep their earlier order
  behind the reranked ones, so the ranking stays ``K_1`` long; its first ``K_last``
  entries are exactly the authors' funnel output (they keep only those).

Storage. :class:`Retriever` holds the database as given (never copied per query) and
builds, once per size, a single contiguous normalized copy ``[N, m]`` (the exact-search
"index", also used for reranking) plus, for ``index="hnsw"``, an HNSW graph at the
shortlisting sizes. At full size an already normalized float32 database is used as is.
Reranking never gathers vectors in Python: faiss computes the ``K`` inner products of each
query with its shortlist rows of the size-``Dr`` copy in one batched call.

Metrics (:func:`retrieval_metrics`), as the authors compute them, at ``k`` in
``{10, 25, 50, 100}``: ``top1`` (label of the nearest neighbour), ``map`` (mAP@k: for each
query the precision at every rank ``i <= k`` holding a hit, summed and divided by ``k``,
not by the number of hits), ``precision`` (hits / k), ``recall`` (hits / number of database
items of the query's class, counted from the labels; the authors hard-code 1300) and
``hit_rate`` (at least one hit in the top ``k``). All values are fractions in ``[0, 1]``.

Several models: :func:`evaluate_models` takes ``{name: EmbeddingCache}`` mappings (database
split and query split), queries every model with the same class-stratified subset, runs
everything on the MRL / MRL-E models it is asked to and single-shot at its own size on each
FF-k model (notebook 06).

Cost per query: ``mflops_per_query`` is the paper's theoretical exact-search cost in
millions of multiply-adds, ``(Ds·N + Σ Dr_i·K_i) / 1e6`` (reported for HNSW runs too, as
the paper does); ``ms_per_query`` is measured wall-clock over the whole query batch
(index building excluded; see :meth:`Retriever.index_table` for build time and memory).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import faiss
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from mrl_analysis.cache.reader import EmbeddingCache

__all__ = [
    "DEFAULT_KS",
    "NESTED_KINDS",
    "Funnel",
    "RetrievalReport",
    "Retriever",
    "adaptive_table",
    "as_accurate_speedup",
    "default_funnels",
    "evaluate_models",
    "evaluate_retrieval",
    "funnel_table",
    "metric_label",
    "plot_cost_tradeoff",
    "plot_metric_vs_size",
    "plot_shortlist_ablation",
    "query_subset",
    "retrieval_metrics",
    "retrieval_mflops",
    "shortlist_ablation_table",
    "single_shot_table",
    "synthetic_nested",
]

IndexKind = Literal["flat", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw")
DEFAULT_KS: tuple[int, ...] = (10, 25, 50, 100)
DEFAULT_FUNNEL_SHORTLISTS: tuple[int, ...] = (200, 100, 50, 25, 10)
DEFAULT_ABLATION_SIZES: tuple[int, ...] = (100, 200, 400, 800, 1600, 2048)
METRICS: tuple[str, ...] = ("top1", "map", "precision", "recall", "hit_rate")
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
_METRIC_NAMES = {
    "top1": "top-1",
    "map": "mAP",
    "precision": "P",
    "recall": "recall",
    "hit_rate": "hit rate",
}
# Queries per faiss call: bounds the [B, K] result and distance buffers.
_QUERY_BATCH = 4096


# ----------------------------------------------------------------------------- metrics


def _check_ks(ks: Iterable[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    return out


def _labels(labels: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per row), got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} labels but there are {n} feature rows")
    return arr


def retrieval_metrics(
    neighbors: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
) -> pd.DataFrame:
    """Mean retrieval metrics of ranked neighbour lists, tidy ``(metric, k, value)``.

    ``neighbors`` is ``[Nq, L]`` database row ids, best first (``-1`` marks a missing
    result, as faiss returns, and counts as a miss); every ``k`` must be ``<= L``.
    ``top1`` is reported with ``k = 1``; ``map``, ``precision``, ``recall`` and
    ``hit_rate`` at each ``k`` (definitions in the module docstring). Queries whose class
    has no database item have no recall and are left out of its mean.
    """
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(
            f"neighbors must be a 2-D integer array [Nq, L], got {nb.dtype} {nb.shape}"
        )
    ql = _labels(query_labels, "query_labels", nb.shape[0])
    dl = _labels(database_labels, "database_labels")
    ks = _check_ks(ks)
    if ks[-1] > nb.shape[1]:
        raise ValueError(
            f"k={ks[-1]} exceeds the {nb.shape[1]} neighbours per query; retrieve at least "
            f"{ks[-1]} or drop the larger ks"
        )
    kmax = ks[-1]
    nb = nb[:, :kmax]
    if nb.size and (nb.max() >= len(dl) or nb.min() < -1):
        raise ValueError(f"neighbour ids must lie in -1..{len(dl) - 1} (database size {len(dl)})")
    valid = nb >= 0
    hits = valid & (dl[np.where(valid, nb, 0)] == ql[:, None])
    cum_hits = np.cumsum(hits, axis=1)
    # Precision at each rank that holds a hit, accumulated over ranks: the authors' AP
    # numerator; dividing by k (not by the hit count) is their normalization.
    ap_sums = np.cumsum(np.where(hits, cum_hits / np.arange(1, kmax + 1), 0.0), axis=1)
    classes, counts = np.unique(dl, return_counts=True)
    pos = np.clip(np.searchsorted(classes, ql), 0, max(len(classes) - 1, 0))
    relevant = np.where((len(classes) > 0) & (classes[pos] == ql), counts[pos], 0)
    has_class = relevant > 0

    rows = [("top1", 1, float(hits[:, 0].mean()) if len(ql) else math.nan)]
    for k in ks:
        h = cum_hits[:, k - 1]
        recall = float((h[has_class] / relevant[has_class]).mean()) if has_class.any() else math.nan
        rows += [
            ("map", k, float((ap_sums[:, k - 1] / k).mean())),
            ("precision", k, float((h / k).mean())),
            ("recall", k, recall),
            ("hit_rate", k, float((h > 0).mean())),
        ]
    return pd.DataFrame(rows, columns=["metric", "k", "value"])


def retrieval_mflops(
    database_size: int,
    shortlist_dim: int,
    rerank_dims: Sequence[int] = (),
    shortlist_sizes: Sequence[int] = (),
) -> float:
    """Theoretical exact-search cost per query in millions of multiply-adds (paper's MFLOPs).

    ``Ds·N`` to shortlist plus ``Dr_i·K_i`` per rerank stage. Single-shot: no stages;
    adaptive: one stage ``(Dr, K)``; funnel: the cascade.

    >>> round(retrieval_mflops(1_281_167, 16, [32, 64, 128, 256, 2048], [200, 100, 50, 25, 10]), 2)
    20.54
    """
    if len(rerank_dims) != len(shortlist_sizes):
        raise ValueError(
            f"rerank_dims {list(rerank_dims)} and shortlist_sizes {list(shortlist_sizes)} "
            "must have the same length (one shortlist length per rerank stage)"
        )
    rerank = sum(int(d) * int(k) for d, k in zip(rerank_dims, shortlist_sizes, strict=True))
    return (int(database_size) * int(shortlist_dim) + rerank) / 1e6


# ----------------------------------------------------------------------------- funnels


@dataclass(frozen=True)
class Funnel:
    """A funnel: shortlist ``shortlist_sizes[0]`` at ``shortlist_dim``, then stage ``i``
    reranks the top ``shortlist_sizes[i]`` at ``rerank_dims[i]``."""

    shortlist_dim: int
    rerank_dims: tuple[int, ...]
    shortlist_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        dims = tuple(int(d) for d in self.rerank_dims)
        sizes = tuple(int(k) for k in self.shortlist_sizes)
        object.__setattr__(self, "rerank_dims", dims)
        object.__setattr__(self, "shortlist_sizes", sizes)
        if not dims or len(dims) != len(sizes):
            raise ValueError(
                f"a funnel needs one shortlist length per rerank size, got rerank_dims {dims} "
                f"and shortlist_sizes {sizes}"
            )
        if min(sizes) < 1 or any(b > a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise ValueError(f"shortlist_sizes must be positive and non-increasing, got {sizes}")
        if int(self.shortlist_dim) < 1 or min(dims) < 1:
            raise ValueError(f"sizes must be >= 1, got Ds={self.shortlist_dim}, Dr={dims}")

    @property
    def label(self) -> str:
        """``"Ds | Dr_1→…→Dr_n | K_1→…→K_n"``, as the paper's Table 13 lists funnels."""
        dims = "→".join(map(str, self.rerank_dims))
        sizes = "→".join(map(str, self.shortlist_sizes))
        return f"{self.shortlist_dim} | {dims} | {sizes}"


def default_funnels(
    nesting: Sequence[int],
    shortlist_sizes: Sequence[int] = DEFAULT_FUNNEL_SHORTLISTS,
    shortlist_dims: Sequence[int] | None = None,
) -> list[Funnel]:
    """The paper's funnel at every shortlisting size: rerank at the next nesting sizes, then full.

    For ``Ds`` the rerank sizes are the next ``n - 1`` nesting sizes above ``Ds`` and then
    the largest, with ``n = min(len(shortlist_sizes), number of larger sizes)`` stages using
    the first ``n`` shortlist lengths (``Ds = 16`` in ``8..2048``:
    ``32→64→128→256→2048`` over ``200→100→50→25→10``).
    """
    sizes = sorted({int(m) for m in nesting})
    if not sizes:
        raise ValueError("nesting is empty: give the representation sizes")
    full = sizes[-1]
    dims = sizes[:-1] if shortlist_dims is None else [int(d) for d in shortlist_dims]
    funnels = []
    for ds in dims:
        larger = [m for m in sizes if m > ds]
        stages = min(len(shortlist_sizes), len(larger))
        if stages == 0:
            continue
        rerank = (*larger[: stages - 1], full)
        funnels.append(Funnel(ds, rerank, tuple(shortlist_sizes[:stages])))
    return funnels


# ----------------------------------------------------------------------------- retriever


def _normalized_prefix(x: np.ndarray, m: int) -> np.ndarray:
    """A contiguous float32 copy of ``x[:, :m]`` with unit rows (all-zero rows stay zero)."""
    out = np.array(x[:, :m], dtype=np.float32, order="C", copy=True)
    # A NaN or inf anywhere in a row makes its norm non-finite: one N-vector to check.
    if not np.isfinite(_row_sqnorms(out)).all():
        raise ValueError("features contain NaN or inf; fix the embeddings before retrieval")
    faiss.normalize_L2(out)
    return out


def _row_sqnorms(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float32)
    faiss.fvec_norms_L2sqr(faiss.swig_ptr(out), faiss.swig_ptr(x), x.shape[1], x.shape[0])
    return out


@dataclass
class _Built:
    structure: str
    truncate_dim: int
    build_s: float
    memory_bytes: int
    shares_database: bool


class Retriever:
    """A database of features searchable at every truncation size (see module docstring).

    ``database`` is ``[N, d]`` float32 (other float dtypes are converted once); it is kept
    as given (a memory map stays a memory map) and never copied per query. ``labels``
    (``[N]``) are needed by the ``*_table`` functions. ``index`` is ``"flat"`` (exact) or
    ``"hnsw"`` (``faiss.IndexHNSWFlat`` with ``hnsw_m`` links, ``ef_construction`` and
    ``ef_search``, raised to ``k`` when a search asks for more). Reranking is always exact.
    ``threads`` sets faiss's OpenMP threads for this retriever's builds, searches and
    reranks (restored afterwards; ``None`` keeps faiss's global setting). Queries go to
    faiss in blocks of ``batch_size``.
    """

    def __init__(
        self,
        database: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        index: IndexKind = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 128,
        batch_size: int = _QUERY_BATCH,
        threads: int | None = None,
    ) -> None:
        db = np.asarray(database)
        if db.ndim != 2 or db.shape[0] == 0 or db.shape[1] == 0:
            raise ValueError(f"database must be a non-empty 2-D array [N, d], got shape {db.shape}")
        if not np.issubdtype(db.dtype, np.floating):
            raise ValueError(f"database must hold floats, got dtype {db.dtype}")
        if index not in INDEX_KINDS:
            raise ValueError(f"unknown index {index!r}: use one of {INDEX_KINDS}")
        if min(hnsw_m, ef_construction, ef_search, batch_size, threads or 1) < 1:
            raise ValueError(
                "hnsw_m, ef_construction, ef_search, batch_size and threads must be >= 1"
            )
        self.database = db if db.dtype == np.float32 else db.astype(np.float32)
        self.labels = None if labels is None else _labels(labels, "labels", db.shape[0])
        self.index_kind: str = index
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.batch_size = int(batch_size)
        self.threads = None if threads is None else int(threads)
        self._vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._hnsw: dict[int, faiss.IndexHNSWFlat] = {}
        self._built: dict[tuple[str, int], _Built] = {}

    @contextmanager
    def _faiss_threads(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    @property
    def size(self) -> int:
        """Number of database items ``N``."""
        return self.database.shape[0]

    @property
    def dim(self) -> int:
        """Full feature size ``d``."""
        return self.database.shape[1]

    def _dim(self, truncate_dim: int | None) -> int:
        m = self.dim if truncate_dim is None else int(truncate_dim)
        if not 1 <= m <= self.dim:
            raise ValueError(f"truncate_dim={truncate_dim} must lie in 1..{self.dim}")
        return m

    def _k(self, k: int, what: str = "k") -> int:
        k = int(k)
        if not 1 <= k <= self.size:
            raise ValueError(f"{what}={k} must lie in 1..{self.size} (the database size)")
        return k

    def _queries(self, queries: np.ndarray, m: int) -> np.ndarray:
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(
                f"queries must be [Nq, {self.dim}] (full-size features like the database), "
                f"got shape {q.shape}"
            )
        return _normalized_prefix(q, m)

    def _full_is_normalized(self) -> bool:
        db = self.database
        if not db.flags.c_contiguous:
            return False
        sq = _row_sqnorms(db)
        return bool(np.all(np.abs(sq - 1.0) <= 1e-4))

    def vectors(self, truncate_dim: int | None = None) -> np.ndarray:
        """The normalized contiguous ``[N, m]`` copy used at size ``m`` (built once, read-only)."""
        return self._store(self._dim(truncate_dim))[0]

    def _store(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        if m not in self._vectors:
            start = time.perf_counter()
            shared = m == self.dim and self._full_is_normalized()
            if shared:
                store = self.database.view()
                sqnorms = np.ones(self.size, dtype=np.float32)
            else:
                store = _normalized_prefix(self.database, m)
                sqnorms = _row_sqnorms(store)
            store.flags.writeable = False
            self._vectors[m] = (store, sqnorms)
            self._built[("flat", m)] = _Built(
                "flat", m, time.perf_counter() - start, 0 if shared else store.nbytes, shared
            )
        return self._vectors[m]

    def _graph(self, m: int) -> faiss.IndexHNSWFlat:
        if m not in self._hnsw:
            store = self._store(m)[0]
            start = time.perf_counter()
            graph = faiss.IndexHNSWFlat(m, self.hnsw_m)
            graph.hnsw.efConstruction = self.ef_construction
            with self._faiss_threads():
                graph.add(store)
            h = graph.hnsw
            memory = (
                store.nbytes + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
            )
            self._hnsw[m] = graph
            self._built[("hnsw", m)] = _Built("hnsw", m, time.perf_counter() - start, memory, False)
        return self._hnsw[m]

    def prepare(self, truncate_dim: int | None = None, *, search: bool = True) -> None:
        """Build what size ``m`` needs ahead of timing: the normalized copy, and the HNSW
        graph when ``search`` and ``index="hnsw"``."""
        m = self._dim(truncate_dim)
        self._store(m)
        if search and self.index_kind == "hnsw":
            self._graph(m)

    def release(self) -> None:
        """Drop every per-size copy and graph (build records are kept)."""
        self._vectors.clear()
        self._hnsw.clear()

    def index_table(self) -> pd.DataFrame:
        """Build time and memory of everything built so far, one row per structure and size.

        ``structure`` is ``"flat"`` (the normalized copy: the exact index and the rerank
        store) or ``"hnsw"`` (graph plus its own copy of the vectors); ``memory_mb`` is 0
        when the copy is the caller's database itself (``shares_database``).
        """
        rows = [
            {
                "structure": b.structure,
                "truncate_dim": b.truncate_dim,
                "build_s": b.build_s,
                "memory_mb": b.memory_bytes / 2**20,
                "shares_database": b.shares_database,
            }
            for b in self._built.values()
        ]
        cols = ["structure", "truncate_dim", "build_s", "memory_mb", "shares_database"]
        return pd.DataFrame(rows, columns=cols).sort_values(["structure", "truncate_dim"])

    def search(self, queries: np.ndarray, truncate_dim: int | None, k: int) -> np.ndarray:
        """The ``k`` nearest database rows of each query at size ``m``, ``[Nq, k]`` int64."""
        m = self._dim(truncate_dim)
        k = self._k(k)
        q = self._queries(queries, m)
        out = np.empty((q.shape[0], k), dtype=np.int64)
        if self.index_kind == "hnsw":
            graph = self._graph(m)
            graph.hnsw.efSearch = max(self.ef_search, k)
            with self._faiss_threads():
                for a in range(0, q.shape[0], self.batch_size):
                    out[a : a + self.batch_size] = graph.search(q[a : a + self.batch_size], k)[1]
        else:
            store = self._store(m)[0]
            with self._faiss_threads():
                for a in range(0, q.shape[0], self.batch_size):
                    block = q[a : a + self.batch_size]
                    out[a : a + self.batch_size] = faiss.knn(block, store, k)[1]
        return out

    def rerank(
        self, queries: np.ndarray, candidates: np.ndarray, truncate_dim: int | None = None
    ) -> np.ndarray:
        """Reorder each query's candidate row ids by exact L2 distance at size ``m``.

        ``candidates`` is ``[Nq, K]`` (``-1`` entries go last); ties keep the candidate
        order. One batched faiss call per block of queries computes all ``K`` distances.
        """
        m = self._dim(truncate_dim)
        q = self._queries(queries, m)
        cand = np.asarray(candidates)
        if cand.ndim != 2 or cand.shape[0] != q.shape[0] or cand.shape[1] == 0:
            raise ValueError(
                f"candidates must be [Nq={q.shape[0]}, K>=1] row ids, got shape {cand.shape}"
            )
        if not np.issubdtype(cand.dtype, np.integer):
            raise ValueError(f"candidates must be integer row ids, got dtype {cand.dtype}")
        if cand.max() >= self.size or cand.min() < -1:
            raise ValueError(f"candidate ids must lie in -1..{self.size - 1}")
        store, sqnorms = self._store(m)
        qsq = _row_sqnorms(q)
        out = np.empty(cand.shape, dtype=np.int64)
        n_cand = cand.shape[1]
        for a in range(0, q.shape[0], self.batch_size):
            block = cand[a : a + self.batch_size]
            valid = block >= 0
            safe = np.ascontiguousarray(np.where(valid, block, 0), dtype=np.int64)
            ip = np.empty(safe.shape, dtype=np.float32)
            qb = q[a : a + self.batch_size]
            with self._faiss_threads():
                faiss.fvec_inner_products_by_idx(
                    faiss.swig_ptr(ip),
                    faiss.swig_ptr(qb),
                    faiss.swig_ptr(store),
                    faiss.swig_ptr(safe),
                    m,
                    len(qb),
                    n_cand,
                )
            dist = qsq[a : a + self.batch_size, None] + sqnorms[safe] - 2.0 * ip
            dist[~valid] = np.inf
            order = np.argsort(dist, axis=1, kind="stable")
            out[a : a + self.batch_size] = np.take_along_axis(block, order, axis=1)
        return out

    def adaptive(
        self,
        queries: np.ndarray,
        shortlist_dim: int,
        rerank_dim: int | None = None,
        shortlist_size: int = 200,
    ) -> np.ndarray:
        """Adaptive retrieval: shortlist ``shortlist_size`` at ``Ds``, rerank at ``Dr``
        (full size by default); ``[Nq, K]`` ranked row ids."""
        shortlist = self.search(queries, shortlist_dim, self._k(shortlist_size, "shortlist_size"))
        return self.rerank(queries, shortlist, rerank_dim)

    def funnel(self, queries: np.ndarray, funnel: Funnel) -> np.ndarray:
        """Funnel retrieval; ``[Nq, K_1]`` ranked row ids (module docstring for the order)."""
        for d in funnel.rerank_dims:
            self._dim(d)
        ranking = self.search(
            queries, funnel.shortlist_dim, self._k(funnel.shortlist_sizes[0], "shortlist size")
        )
        for dim, keep in zip(funnel.rerank_dims, funnel.shortlist_sizes, strict=True):
            ranking[:, :keep] = self.rerank(queries, ranking[:, :keep], dim)
        return ranking


# ----------------------------------------------------------------------------- tables


def _timed(fn: Callable[..., np.ndarray], *args: object) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _rows(
    metrics: pd.DataFrame,
    *,
    model: str,
    method: str,
    index: str,
    ds: int,
    dr: int | None,
    k_short: int | None,
    cascade: str,
    mflops: float,
    seconds: float,
    n_queries: int,
) -> pd.DataFrame:
    out = metrics.copy()
    out.insert(0, "model", model)
    out.insert(1, "method", method)
    out.insert(2, "index", index)
    out.insert(3, "Ds", ds)
    out.insert(4, "Dr", pd.NA if dr is None else dr)
    out.insert(5, "K", pd.NA if k_short is None else k_short)
    out.insert(6, "cascade", cascade)
    out["mflops_per_query"] = mflops
    out["ms_per_query"] = 1000.0 * seconds / max(n_queries, 1)
    return out


def _tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    out = pd.concat(frames, ignore_index=True)[TABLE_COLUMNS]
    for col in ("Ds", "Dr", "K", "k"):
        out[col] = out[col].astype("Int64")
    return out


def _setup(
    retriever: Retriever, queries: np.ndarray, query_labels: np.ndarray, ks: Iterable[int]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    if retriever.labels is None:
        raise ValueError("the Retriever has no labels: pass Retriever(database, labels)")
    q = np.asarray(queries)
    ql = _labels(query_labels, "query_labels", q.shape[0] if q.ndim == 2 else None)
    return q, ql, _check_ks(ks)


def _fit(ks: list[int], length: int) -> list[int]:
    """The ks a ranking of ``length`` can score (top-1 is always scored)."""
    return [k for k in ks if k <= length] or [1]


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
    q, ql, ks = _setup(retriever, queries, query_labels, ks)
    k_search = min(ks[-1], retriever.size)
    frames = []
    for m in tqdm(list(nesting), desc="single-shot", disable=not progress):
        retriever.prepare(m)
        nb, seconds = _timed(retriever.search, q, m, k_search)
        metrics = retrieval_metrics(nb, ql, retriever.labels, _fit(ks, k_search))
        frames.append(
            _rows(
                metrics,
                model=model,
                method="single-shot",
                index=retriever.index_kind,
                ds=int(m),
                dr=None,
                k_short=None,
                cascade="",
                mflops=retrieval_mflops(retriever.size, m),
                seconds=seconds,
                n_queries=len(q),
            )
        )
    return _tidy(frames)


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
    q, ql, ks = _setup(retriever, queries, query_labels, ks)
    k_short = retriever._k(shortlist_size, "shortlist_size")
    rerank = sorted(
        {int(d) for d in (rerank_dims if rerank_dims is not None else shortlist_dims)}
        | ({retriever.dim} if rerank_dims is None else set())
    )
    frames = []
    for ds in tqdm(list(shortlist_dims), desc="adaptive", disable=not progress):
        retriever.prepare(ds)
        shortlist, t_short = _timed(retriever.search, q, ds, k_short)
        for dr in (d for d in rerank if d > ds):
            retriever.prepare(dr, search=False)
            nb, t_rerank = _timed(retriever.rerank, q, shortlist, dr)
            frames.append(
                _rows(
                    retrieval_metrics(nb, ql, retriever.labels, _fit(ks, k_short)),
                    model=model,
                    method="adaptive",
                    index=retriever.index_kind,
                    ds=int(ds),
                    dr=int(dr),
                    k_short=k_short,
                    cascade="",
                    mflops=retrieval_mflops(retriever.size, ds, [dr], [k_short]),
                    seconds=t_short + t_rerank,
                    n_queries=len(q),
                )
            )
    return _tidy(frames)


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
    q, ql, ks = _setup(retriever, queries, query_labels, ks)
    frames = []
    for f in tqdm(list(funnels), desc="funnel", disable=not progress):
        retriever.prepare(f.shortlist_dim)
        for d in f.rerank_dims:
            retriever.prepare(d, search=False)
        nb, seconds = _timed(retriever.funnel, q, f)
        frames.append(
            _rows(
                retrieval_metrics(nb, ql, retriever.labels, _fit(ks, nb.shape[1])),
                model=model,
                method="funnel",
                index=retriever.index_kind,
                ds=f.shortlist_dim,
                dr=f.rerank_dims[-1],
                k_short=f.shortlist_sizes[0],
                cascade=f.label,
                mflops=retrieval_mflops(
                    retriever.size, f.shortlist_dim, f.rerank_dims, f.shortlist_sizes
                ),
                seconds=seconds,
                n_queries=len(q),
            )
        )
    return _tidy(frames)


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
    q, ql, ks = _setup(retriever, queries, query_labels, ks)
    dr = retriever._dim(rerank_dim)
    sizes = [int(k) for k in shortlist_sizes if int(k) <= retriever.size]
    retriever.prepare(shortlist_dim)
    retriever.prepare(dr, search=False)
    frames = []
    for k_short in tqdm(sizes, desc="shortlist ablation", disable=not progress):
        nb, seconds = _timed(retriever.adaptive, q, shortlist_dim, dr, k_short)
        frames.append(
            _rows(
                retrieval_metrics(nb, ql, retriever.labels, _fit(ks, k_short)),
                model=model,
                method="shortlist-ablation",
                index=retriever.index_kind,
                ds=int(shortlist_dim),
                dr=dr,
                k_short=k_short,
                cascade="",
                mflops=retrieval_mflops(retriever.size, shortlist_dim, [dr], [k_short]),
                seconds=seconds,
                n_queries=len(q),
            )
        )
    return _tidy(frames)


@dataclass
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
    index: IndexKind = "flat",
    ks: Iterable[int] = DEFAULT_KS,
    shortlist_size: int = 200,
    funnels: Sequence[Funnel] | None = None,
    ablation_dim: int | None = None,
    ablation_sizes: Sequence[int] = DEFAULT_ABLATION_SIZES,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 128,
    threads: int | None = None,
    progress: bool = True,
) -> RetrievalReport:
    """Everything for one model: single-shot at every size, adaptive for every ``Ds < Dr``
    in ``nesting``, funnels (:func:`default_funnels` unless given) and the shortlist-length
    ablation at ``ablation_dim`` (16 if in ``nesting``, else the nesting size nearest 16)
    reranked at full size. The full size is added to ``nesting`` when missing. ``index``,
    ``hnsw_m``, ``ef_construction``, ``ef_search`` and ``threads`` go to :class:`Retriever`."""
    retriever = Retriever(
        database,
        database_labels,
        index=index,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        threads=threads,
    )
    sizes = sorted({int(m) for m in nesting} | {retriever.dim})
    if sizes[0] < 1 or sizes[-1] > retriever.dim:
        raise ValueError(f"nesting {list(nesting)} must lie within 1..{retriever.dim}")
    common = {"ks": ks, "model": model, "progress": progress}
    smaller = sizes[:-1]
    ablation = min(sizes, key=lambda m: (abs(m - 16), m)) if ablation_dim is None else ablation_dim
    frames = [
        single_shot_table(retriever, queries, query_labels, sizes, **common),
        adaptive_table(
            retriever,
            queries,
            query_labels,
            smaller,
            shortlist_size=min(shortlist_size, retriever.size),
            **common,
        ),
        funnel_table(
            retriever,
            queries,
            query_labels,
            default_funnels(sizes, [min(k, retriever.size) for k in DEFAULT_FUNNEL_SHORTLISTS])
            if funnels is None
            else funnels,
            **common,
        ),
    ]
    if ablation < retriever.dim:
        frames.append(
            shortlist_ablation_table(
                retriever, queries, query_labels, ablation, None, ablation_sizes, **common
            )
        )
    table = _tidy([f for f in frames if len(f)])
    return RetrievalReport(table=table, indexes=retriever.index_table())


# ----------------------------------------------------------------------------- several models

#: Cache kinds whose features are nested (searched at every nesting size).
NESTED_KINDS: tuple[str, ...] = ("mrl", "mrl-e")


def query_subset(labels: np.ndarray, n_queries: int | None, seed: int = 0) -> np.ndarray:
    """Sorted row ids of a class-stratified random subset of ``n_queries`` rows.

    All rows when ``n_queries`` is ``None`` or not smaller than their number. The subset
    is stratified by label (scikit-learn's ``train_test_split``) when every class has at
    least two rows and both parts can hold one row per class; otherwise it is uniform.
    """
    y = _labels(labels, "labels")
    n = len(y)
    if n_queries is None or int(n_queries) >= n:
        return np.arange(n)
    if int(n_queries) < 1:
        raise ValueError(f"n_queries must be >= 1 (or None for all {n} queries), got {n_queries}")
    _, counts = np.unique(y, return_counts=True)
    can_stratify = counts.min() >= 2 and min(int(n_queries), n - int(n_queries)) >= len(counts)
    picked, _ = train_test_split(
        np.arange(n),
        train_size=int(n_queries),
        stratify=y if can_stratify else None,
        random_state=seed,
    )
    return np.sort(picked)


def evaluate_models(
    database_caches: Mapping[str, EmbeddingCache],
    query_caches: Mapping[str, EmbeddingCache],
    *,
    full_models: Collection[str] | None = None,
    n_queries: int | None = None,
    seed: int = 0,
    min_dim: int = 1,
    index: IndexKind = "flat",
    ks: Iterable[int] = DEFAULT_KS,
    shortlist_size: int = 200,
    funnel_shortlists: Sequence[int] = DEFAULT_FUNNEL_SHORTLISTS,
    funnel_dims: Sequence[int] | None = None,
    ablation_sizes: Sequence[int] = DEFAULT_ABLATION_SIZES,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 128,
    threads: int | None = None,
    progress: bool = True,
) -> RetrievalReport:
    """Retrieval for several named models' caches (e.g. database = train, queries = test).

    Every model is queried with the same rows: a class-stratified subset of ``n_queries``
    (:func:`query_subset`; all when ``None``). A nested model (cache kind in
    :data:`NESTED_KINDS`) is searched single-shot at each of its nesting sizes from
    ``min_dim`` up; those named in ``full_models`` (default: every nested model) get all
    of :func:`evaluate_retrieval` instead (adaptive; funnels from :func:`default_funnels`
    with ``funnel_shortlists``, capped at the database size, shortlisting at
    ``funnel_dims`` (default: every size but the full one); shortlist ablation). A
    fixed-feature model FF-k is searched single-shot at its own size ``k`` only. The
    index table gains a ``model`` column.
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
    options = {"ks": ks, "progress": progress}
    tables, indexes = [], []
    for name, queries in query_caches.items():
        database = database_caches[name]
        if not np.array_equal(queries.labels, first.labels):
            raise ValueError(
                f"the query caches of {name!r} and {next(iter(query_caches))!r} hold different "
                "samples (labels differ): embed the same split for every model"
            )
        if queries.kind in NESTED_KINDS:
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
        if name in full:
            report = evaluate_retrieval(
                db,
                database.labels,
                q,
                ql,
                sizes,
                model=name,
                index=index,
                shortlist_size=shortlist_size,
                funnels=default_funnels(
                    [*sizes, full_dim],
                    [min(int(k), len(db)) for k in funnel_shortlists],
                    funnel_dims,
                ),
                ablation_sizes=ablation_sizes,
                hnsw_m=hnsw_m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                threads=threads,
                **options,
            )
            table, built = report.table, report.indexes
        else:
            retriever = Retriever(
                db,
                database.labels,
                index=index,
                hnsw_m=hnsw_m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                threads=threads,
            )
            table = single_shot_table(retriever, q, ql, sizes, model=name, **options)
            built = retriever.index_table()
        tables.append(table)
        indexes.append(built.assign(model=name))
        del db, q
    index_table = pd.concat(indexes, ignore_index=True)
    return RetrievalReport(
        table=_tidy(tables), indexes=index_table[["model", *index_table.columns[:-1]]]
    )


# ----------------------------------------------------------------------------- summaries


def _select(table: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {METRICS}")
    k = 1 if metric == "top1" else int(k)
    missing = set(TABLE_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"not a retrieval table (missing columns {sorted(missing)})")
    sel = table[(table["metric"] == metric) & (table["k"] == k)]
    if sel.empty:
        raise ValueError(
            f"the table has no rows for {metric}@{k}; available ks: "
            f"{sorted(table.loc[table['metric'] == metric, 'k'].unique())}"
        )
    return sel


def as_accurate_speedup(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    reference_dim: int | None = None,
    tolerance: float = 0.0,
    methods: Sequence[str] = ("adaptive", "funnel"),
) -> pd.DataFrame:
    """The cheapest configuration as accurate as single-shot at ``reference_dim``.

    Per ``(model, index)``: the reference is the single-shot row at ``reference_dim``
    (default: the largest single-shot size); among rows of ``methods`` whose value is at
    least the reference's minus ``tolerance`` (same units as the values, fractions), the
    one with the fewest MFLOPs/query (then the fastest). ``flops_ratio`` and
    ``speed_ratio`` say how many times cheaper and faster than the reference it is. Groups
    where nothing qualifies are left out.
    """
    sel = _select(table, metric, k)
    rows = []
    for (model, index), group in sel.groupby(["model", "index"], sort=False):
        single = group[group["method"] == "single-shot"]
        if single.empty:
            continue
        ref_dim = int(single["Ds"].max()) if reference_dim is None else int(reference_dim)
        ref = single[single["Ds"] == ref_dim]
        if ref.empty:
            raise ValueError(f"no single-shot row at Ds={ref_dim} for model {model!r}")
        ref = ref.iloc[0]
        cand = group[group["method"].isin(methods) & (group["value"] >= ref["value"] - tolerance)]
        if cand.empty:
            continue
        best = cand.sort_values(["mflops_per_query", "ms_per_query"]).iloc[0]
        rows.append(
            {
                "model": model,
                "index": index,
                "metric": metric,
                "k": int(best["k"]),
                "reference_Ds": ref_dim,
                "reference_value": ref["value"],
                "reference_mflops": ref["mflops_per_query"],
                "reference_ms": ref["ms_per_query"],
                "method": best["method"],
                "Ds": best["Ds"],
                "Dr": best["Dr"],
                "K": best["K"],
                "cascade": best["cascade"],
                "value": best["value"],
                "mflops_per_query": best["mflops_per_query"],
                "ms_per_query": best["ms_per_query"],
                "flops_ratio": ref["mflops_per_query"] / best["mflops_per_query"],
                "speed_ratio": ref["ms_per_query"] / best["ms_per_query"],
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures


def metric_label(metric: str, k: int) -> str:
    """Display name of ``metric@k``: ``"top-1"``, ``"mAP@10"``, ``"P@25"``, ``"hit rate@100"``."""
    return "top-1" if metric == "top1" else f"{_METRIC_NAMES[metric]}@{k}"


def plot_metric_vs_size(table: pd.DataFrame, metric: str = "map", k: int = 10) -> go.Figure:
    """Single-shot ``metric@k`` (%) against representation size, one line per model
    (paper Figure 7). Give FF-k models a common ``model`` name to draw them as one line."""
    sel = _select(table, metric, k)
    sel = sel[sel["method"] == "single-shot"].sort_values("Ds")
    fig = go.Figure()
    for (model, index), group in sel.groupby(["model", "index"], sort=False):
        name = model if sel["index"].nunique() == 1 else f"{model} ({index})"
        fig.add_trace(
            go.Scatter(
                x=group["Ds"].astype(int), y=100 * group["value"], mode="lines+markers", name=name
            )
        )
    label = metric_label(metric, k)
    fig.update_layout(
        title=f"Single-shot retrieval: {label} vs representation size",
        xaxis={"title": "representation size", "type": "log", "dtick": math.log10(2)},
        yaxis_title=f"{label} (%)",
        template="plotly_white",
    )
    return fig


def plot_cost_tradeoff(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    model: str | None = None,
    reference_dim: int | None = None,
    tolerance: float = 0.0,
) -> go.Figure:
    """``metric@k`` against MFLOPs/query for every adaptive ``(Ds, Dr)`` and funnel, over the
    single-shot Pareto line (paper Figure 8), annotated with :func:`as_accurate_speedup`."""
    sel = _select(table, metric, k)
    models = sel["model"].unique()
    if model is None:
        if len(models) != 1:
            raise ValueError(f"the table holds several models {list(models)}: pass model=")
        model = models[0]
    sel = sel[sel["model"] == model]
    if sel.empty:
        raise ValueError(f"no rows for model {model!r}; models: {list(models)}")
    if sel["index"].nunique() != 1:
        raise ValueError("the table mixes flat and HNSW runs: filter it to one index first")
    fig = go.Figure()
    single = sel[sel["method"] == "single-shot"].sort_values("mflops_per_query")
    front = single[single["value"] >= single["value"].cummax()]
    fig.add_trace(
        go.Scatter(
            x=front["mflops_per_query"],
            y=100 * front["value"],
            mode="lines+markers+text",
            text=[f"d={int(d)}" for d in front["Ds"]],
            textposition="bottom center",
            name="single-shot (Pareto)",
            line={"color": "darkorange"},
        )
    )
    adaptive = sel[sel["method"] == "adaptive"]
    for ds, group in adaptive.groupby("Ds", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["mflops_per_query"],
                y=100 * group["value"],
                mode="markers",
                name=f"AR Ds={int(ds)}",
                customdata=group["Dr"].astype(int),
                hovertemplate="Ds=" + str(int(ds)) + ", Dr=%{customdata}<br>%{x:.3g} MFLOPs"
                "<br>%{y:.2f}%<extra></extra>",
            )
        )
    funnel = sel[sel["method"] == "funnel"]
    if len(funnel):
        fig.add_trace(
            go.Scatter(
                x=funnel["mflops_per_query"],
                y=100 * funnel["value"],
                mode="markers",
                marker={"symbol": "star", "size": 11, "color": "purple"},
                name="funnel",
                text=funnel["cascade"],
                hovertemplate="%{text}<br>%{x:.3g} MFLOPs<br>%{y:.2f}%<extra></extra>",
            )
        )
    best = as_accurate_speedup(sel, metric, k, reference_dim=reference_dim, tolerance=tolerance)
    if len(best):
        b = best.iloc[0]
        as_good = "as accurate as" if tolerance <= 0 else f"within {100 * tolerance:.3g} points of"
        fig.add_annotation(
            x=math.log10(b["mflops_per_query"]),
            y=100 * b["value"],
            text=(
                f"{as_good} d={b['reference_Ds']} at {b['flops_ratio']:.0f}× fewer "
                f"MFLOPs, {b['speed_ratio']:.1f}× faster"
            ),
            showarrow=True,
            arrowhead=2,
            ax=60,
            ay=40,
        )
    elif len(single):
        ref = int(single["Ds"].max()) if reference_dim is None else int(reference_dim)
        fig.add_annotation(
            xref="paper",
            yref="paper",
            x=0.02,
            y=0.98,
            showarrow=False,
            text=f"no adaptive or funnel configuration reaches single-shot d={ref}",
        )
    label = metric_label(metric, k)
    fig.update_layout(
        title=f"{model}: {label} vs cost ({sel['index'].iloc[0]} shortlisting)",
        xaxis={"title": "MFLOPs / query (exact search)", "type": "log"},
        yaxis_title=f"{label} (%)",
        template="plotly_white",
    )
    return fig


def plot_shortlist_ablation(
    table: pd.DataFrame, metrics: Sequence[tuple[str, int]] = (("top1", 1), ("map", 10))
) -> go.Figure:
    """Shortlist-ablation rows: each ``(metric, k)`` (%) against shortlist length ``K``,
    with single-shot at the rerank size ``Dr`` as a dashed reference when the table has it."""
    fig = go.Figure()
    lengths: set[int] = set()
    colors = itertools.cycle(pio.templates["plotly_white"].layout.colorway)
    for metric, k in metrics:
        sel = _select(table, metric, k)
        single = sel[sel["method"] == "single-shot"]
        sel = sel[sel["method"] == "shortlist-ablation"].sort_values("K")
        lengths.update(int(v) for v in sel["K"])
        for (model, ds, dr), group in sel.groupby(["model", "Ds", "Dr"], sort=False):
            color = next(colors)
            label = metric_label(metric, k)
            fig.add_trace(
                go.Scatter(
                    x=group["K"].astype(int),
                    y=100 * group["value"],
                    mode="lines+markers",
                    name=f"{model} {label} (Ds={ds}, Dr={dr})",
                    line={"color": color},
                )
            )
            ref = single[(single["model"] == model) & (single["Ds"] == dr)]
            if len(ref):
                fig.add_trace(
                    go.Scatter(
                        x=[group["K"].min(), group["K"].max()],
                        y=[100 * ref["value"].iloc[0]] * 2,
                        mode="lines",
                        name=f"{model} {label} single-shot d={dr}",
                        line={"color": color, "dash": "dash"},
                    )
                )
    fig.update_layout(
        title="Adaptive retrieval: shortlist length ablation",
        # Ticks at the measured lengths: a log axis over 100..2048 otherwise labels 2, 3, ... 9.
        xaxis={"title": "shortlist length K", "type": "log", "tickvals": sorted(lengths)},
        yaxis_title="value (%)",
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------------- synthetic


def synthetic_nested(
    n_database: int,
    n_queries: int,
    dim: int = 512,
    num_classes: int = 1000,
    *,
    decay: float = 1.0,
    noise: float = 1.0,
    normalize: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nested-like features: ``(database, database_labels, queries, query_labels)``.

    Item ``x`` of class ``y`` is ``s ⊙ (c_y + noise·ε)`` with class centroids
    ``c_y ~ N(0, I)``, ``ε ~ N(0, I)`` and per-dimension scale ``s_j = (1 + j)^(-decay/2)``.
    Every dimension has the same signal-to-noise ratio, but dimension ``j`` weighs
    ``(1 + j)^-decay`` in the L2 geometry, so the first dimensions carry most of the
    distance and accuracy rises with the prefix size and saturates, like an MRL embedding.
    ``normalize`` L2-normalizes rows at full size. Built in row blocks (float32 throughout).
    """
    if min(n_database, n_queries, dim, num_classes) < 1:
        raise ValueError("n_database, n_queries, dim and num_classes must all be >= 1")
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((num_classes, dim), dtype=np.float32)
    scale = (1.0 + np.arange(dim, dtype=np.float32)) ** np.float32(-decay / 2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, num_classes, n)
        x = np.empty((n, dim), dtype=np.float32)
        for a in range(0, n, 65536):
            block = x[a : a + 65536]
            np.take(centroids, labels[a : a + 65536], axis=0, out=block)
            block += np.float32(noise) * rng.standard_normal(block.shape, dtype=np.float32)
            block *= scale
            if normalize:
                faiss.normalize_L2(block)
        return x, labels

    database, database_labels = draw(int(n_database))
    queries, query_labels = draw(int(n_queries))
    return database, database_labels, queries, query_labels
