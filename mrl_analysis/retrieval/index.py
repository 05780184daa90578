"""Search structures: the index spec and the :class:`Retriever` (faiss).

A *database* (one split's features, e.g. train) is searched with *queries* (another split,
e.g. test). At every size ``m`` both are truncated to their first ``m`` dimensions and
L2-normalized; neighbours are ranked by L2 distance, as in the paper (Appendix E).

How the shortlist is searched is one value, :class:`IndexSpec`: its ``kind`` (``"flat"``:
exact search; ``"hnsw"``: ``faiss.IndexHNSWFlat``), the kind's own settings and the runtime
settings (faiss threads, queries per faiss call). It goes unchanged from a notebook's
parameters through the study to :func:`build_index`.

Storage. :class:`Retriever` holds the database as given (never copied per query) and
builds, once per size, a single contiguous normalized copy ``[N, m]`` (the exact-search
"index", also used for reranking) plus, for an approximate kind, its index at the
shortlisting sizes. At full size an already normalized float32 database is used as is.
Reranking is always exact and never gathers vectors in Python: faiss computes the ``K``
inner products of each query with its shortlist rows of the size-``Dr`` copy in one
batched call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import pandas as pd

from mrl_analysis.core.checks import (
    NonFiniteError,
    check_choice,
    check_features,
    check_int,
    check_labels,
    check_truncate_dim,
)
from mrl_analysis.retrieval.plan import Funnel

__all__ = ["DEFAULT_INDEX", "INDEX_KINDS", "IndexKind", "IndexSpec", "Retriever", "build_index"]

IndexKind = Literal["flat", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw")
# Queries per faiss call: bounds the [B, K] result and distance buffers.
_QUERY_BATCH = 4096


@dataclass(frozen=True)
class IndexSpec:
    """How the shortlist is searched: one value from the notebook down to the index builder.

    * ``kind``: ``"flat"`` (exact search over the normalized copy) or ``"hnsw"``;
    * ``hnsw_m``, ``ef_construction``, ``ef_search``: HNSW's links per node, build-time and
      search-time beam (``ef_search`` is raised to ``k`` when a search asks for more);
    * ``threads``: faiss's OpenMP threads for builds, searches and reranks (restored
      afterwards; ``None`` keeps faiss's global setting);
    * ``batch_size``: queries per faiss call.

    A new kind adds its settings here (e.g. ``nlist`` / ``nprobe`` for IVF) and its branch
    in :func:`build_index` and :func:`set_search`; reranking stays exact for every kind.
    """

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    threads: int | None = None
    batch_size: int = _QUERY_BATCH

    def __post_init__(self) -> None:
        check_choice(self.kind, INDEX_KINDS, "index kind")
        for name in ("hnsw_m", "ef_construction", "ef_search", "batch_size"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low=1))
        if self.threads is not None:
            object.__setattr__(self, "threads", check_int(self.threads, "threads", low=1))

    @property
    def exact(self) -> bool:
        """Whether searches are exact (no index beyond the normalized copy)."""
        return self.kind == "flat"


#: Exact search with faiss's global thread setting.
DEFAULT_INDEX = IndexSpec()


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run the block with faiss using ``threads`` OpenMP threads (``None``: unchanged)."""
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build_index(vectors: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """The approximate index of ``spec.kind`` over normalized ``vectors [N, m]``, filled."""
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(vectors.shape[1], spec.hnsw_m)
        index.hnsw.efConstruction = spec.ef_construction
        with faiss_threads(spec.threads):
            index.add(vectors)
        return index
    raise ValueError(f"a {spec.kind!r} search is exact: it builds no index")


def set_search(index: faiss.Index, spec: IndexSpec, k: int) -> None:
    """Set the search-time parameters of ``index`` for ``k`` neighbours."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = max(spec.ef_search, k)


def index_memory(index: faiss.Index, spec: IndexSpec) -> int:
    """Bytes held by ``index``: its own copy of the vectors plus its structure."""
    vectors = index.ntotal * index.d * 4
    if spec.kind == "hnsw":
        h = index.hnsw
        return vectors + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
    return vectors


def _normalized_prefix(x: np.ndarray, m: int) -> np.ndarray:
    """A contiguous float32 copy of ``x[:, :m]`` with unit rows (all-zero rows stay zero)."""
    out = np.array(x[:, :m], dtype=np.float32, order="C", copy=True)
    # A NaN or inf anywhere in a row makes its norm non-finite: one N-vector to check.
    if not np.isfinite(_row_sqnorms(out)).all():
        raise NonFiniteError("features contain NaN or inf; fix the embeddings before retrieval")
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

    ``database`` is ``[N, d]`` float32 (other real dtypes are converted once); it is kept
    as given (a memory map stays a memory map) and never copied per query. ``labels``
    (``[N]``) are needed by the table builders. ``index`` says how shortlists are searched;
    ``spec`` may be replaced later (``dataclasses.replace``) to change runtime settings
    such as ``threads``; structures already built are kept.
    """

    def __init__(
        self,
        database: np.ndarray,
        labels: np.ndarray | None = None,
        index: IndexSpec = DEFAULT_INDEX,
    ) -> None:
        db = check_features(database, "database", finite=False)
        if db.shape[0] == 0 or db.shape[1] == 0:
            raise ValueError(f"database must be a non-empty 2-D array [N, d], got shape {db.shape}")
        if not isinstance(index, IndexSpec):
            raise TypeError(f"index must be an IndexSpec, got {index!r}")
        self.database = db if db.dtype == np.float32 else db.astype(np.float32)
        self.labels = None if labels is None else check_labels(labels, db.shape[0], "labels")
        self.spec = index
        self._vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._indexes: dict[int, faiss.Index] = {}
        self._built: dict[tuple[str, int], _Built] = {}

    @property
    def size(self) -> int:
        """Number of database items ``N``."""
        return self.database.shape[0]

    @property
    def dim(self) -> int:
        """Full feature size ``d``."""
        return self.database.shape[1]

    def check_dim(self, truncate_dim: int | None) -> int:
        """``truncate_dim`` as a size in ``1..d`` (``None``: the full size)."""
        if truncate_dim is None:
            return self.dim
        return check_truncate_dim(truncate_dim, [self.dim], any_size=True)

    def check_k(self, k: int, what: str = "k") -> int:
        """``k`` as a number of results in ``1..N``."""
        k = check_int(k, what)
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
        return self._store(self.check_dim(truncate_dim))[0]

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

    def _index(self, m: int) -> faiss.Index:
        if m not in self._indexes:
            store = self._store(m)[0]
            start = time.perf_counter()
            index = build_index(store, self.spec)
            elapsed, kind = time.perf_counter() - start, self.spec.kind
            self._indexes[m] = index
            self._built[(kind, m)] = _Built(kind, m, elapsed, index_memory(index, self.spec), False)
        return self._indexes[m]

    def prepare(self, truncate_dim: int | None = None, *, search: bool = True) -> None:
        """Build what size ``m`` needs ahead of timing: the normalized copy, and the index
        when ``search`` and the spec's kind is approximate."""
        m = self.check_dim(truncate_dim)
        self._store(m)
        if search and not self.spec.exact:
            self._index(m)

    def release(self) -> None:
        """Drop every per-size copy and index (build records are kept)."""
        self._vectors.clear()
        self._indexes.clear()

    def index_table(self) -> pd.DataFrame:
        """Build time and memory of everything built so far, one row per structure and size.

        ``structure`` is ``"flat"`` (the normalized copy: the exact index and the rerank
        store) or the approximate kind (e.g. ``"hnsw"``: graph plus its own copy of the
        vectors); ``memory_mb`` is 0 when the copy is the caller's database itself
        (``shares_database``).
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
        m = self.check_dim(truncate_dim)
        k = self.check_k(k)
        q = self._queries(queries, m)
        out = np.empty((q.shape[0], k), dtype=np.int64)
        step = self.spec.batch_size
        if self.spec.exact:
            store = self._store(m)[0]
            with faiss_threads(self.spec.threads):
                for a in range(0, q.shape[0], step):
                    out[a : a + step] = faiss.knn(q[a : a + step], store, k)[1]
        else:
            index = self._index(m)
            set_search(index, self.spec, k)
            with faiss_threads(self.spec.threads):
                for a in range(0, q.shape[0], step):
                    out[a : a + step] = index.search(q[a : a + step], k)[1]
        return out

    def rerank(
        self, queries: np.ndarray, candidates: np.ndarray, truncate_dim: int | None = None
    ) -> np.ndarray:
        """Reorder each query's candidate row ids by exact L2 distance at size ``m``.

        ``candidates`` is ``[Nq, K]`` (``-1`` entries go last); ties keep the candidate
        order. One batched faiss call per block of queries computes all ``K`` distances.
        """
        m = self.check_dim(truncate_dim)
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
        n_cand, step = cand.shape[1], self.spec.batch_size
        for a in range(0, q.shape[0], step):
            block = cand[a : a + step]
            valid = block >= 0
            safe = np.ascontiguousarray(np.where(valid, block, 0), dtype=np.int64)
            ip = np.empty(safe.shape, dtype=np.float32)
            qb = q[a : a + step]
            with faiss_threads(self.spec.threads):
                faiss.fvec_inner_products_by_idx(
                    faiss.swig_ptr(ip),
                    faiss.swig_ptr(qb),
                    faiss.swig_ptr(store),
                    faiss.swig_ptr(safe),
                    m,
                    len(qb),
                    n_cand,
                )
            dist = qsq[a : a + step, None] + sqnorms[safe] - 2.0 * ip
            dist[~valid] = np.inf
            order = np.argsort(dist, axis=1, kind="stable")
            out[a : a + step] = np.take_along_axis(block, order, axis=1)
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
        k = self.check_k(shortlist_size, "shortlist_size")
        return self.rerank(queries, self.search(queries, shortlist_dim, k), rerank_dim)

    def funnel(self, queries: np.ndarray, funnel: Funnel) -> np.ndarray:
        """Funnel retrieval; ``[Nq, K_1]`` ranked row ids (see :mod:`.plan` for the order)."""
        for d in funnel.rerank_dims:
            self.check_dim(d)
        ranking = self.search(
            queries, funnel.shortlist_dim, self.check_k(funnel.shortlist_sizes[0], "shortlist size")
        )
        for dim, keep in zip(funnel.rerank_dims, funnel.shortlist_sizes, strict=True):
            ranking[:, :keep] = self.rerank(queries, ranking[:, :keep], dim)
        return ranking
