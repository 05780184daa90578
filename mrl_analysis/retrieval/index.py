"""Search structures: the :class:`Retriever` and the faiss indexes it builds.

A *database* (one split's features, e.g. train) is searched with *queries* (another split,
e.g. test). At every size ``m`` both are truncated to their first ``m`` dimensions and
L2-normalized; neighbours are ranked by L2 distance, as in the paper (Appendix E).

How a shortlist is searched is one value, :class:`~mrl_analysis.retrieval.plan.IndexSpec`
(structure ``flat`` / ``hnsw`` / ``ivf``, codec ``float32`` / ``int8`` / ``binary``, their
settings and the runtime settings); :func:`build_index` turns it into a
:class:`ShortlistIndex` over the normalized ``[N, Ds]`` vectors:

* ``flat`` + ``float32`` is exact search over the normalized copy itself (no index);
* ``flat`` + ``int8``: ``faiss.IndexScalarQuantizer`` (8 bits per dim);
* ``flat`` / ``hnsw`` + ``binary``: ``faiss.IndexBinaryFlat`` / ``IndexBinaryHNSW`` over one
  bit per dim (the sign of the vector minus the database mean at ``Ds``), Hamming distance;
* ``hnsw``: ``faiss.IndexHNSWFlat`` (``IndexHNSWSQ`` for int8);
* ``ivf`` (AdANNS-IVF): ``faiss.IndexIVFFlat`` (``IndexIVFScalarQuantizer`` for int8) whose
  coarse quantizer is ``IndexPreTransform(RemapDimensionsTransform(Ds → Dc), IndexFlatL2(Dc))``
  holding k-means centroids learned on the first ``Dc`` dims: lists are assigned and probed
  at ``Dc``, scanned at ``Ds``.

faiss-native peers (:class:`~mrl_analysis.retrieval.plan.PeerSpec`) are built with
``faiss.index_factory`` over the full-size normalized vectors and tuned with
``faiss.ParameterSpace``.

Storage. :class:`Retriever` holds the database as given (never copied per query) and
builds, once per size, a single contiguous normalized copy ``[N, m]`` (the exact-search
"index", also the rerank store) plus each index asked for. At full size an already
normalized float32 database is used as is, so a full-size faiss index (a peer, or any kind
at ``Ds = d``) is the only copy of the full database. Reranking is always exact float32 and
never gathers vectors in Python: faiss computes the ``K`` inner products of each query with
its shortlist rows of the size-``Dr`` copy in one batched call.

Bytes per database vector (:meth:`Retriever.stored_bytes`, :func:`index_bytes`) count what
a search keeps resident: codes, ids, graph links and coarse centroids (trained codebooks
and scalar ranges, a few KB, are left out); the float32 store counts ``4·m`` even when it is
the caller's array.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_features, check_int, check_labels, check_truncate_dim
from mrl_analysis.retrieval.plan import (
    CODECS,
    DEFAULT_INDEX,
    INDEX_KINDS,
    Funnel,
    IndexKind,
    IndexSpec,
    PeerSpec,
    Pipeline,
)

__all__ = [
    "CODECS",
    "DEFAULT_INDEX",
    "INDEX_KINDS",
    "IndexKind",
    "IndexSpec",
    "Retriever",
    "ShortlistIndex",
    "build_index",
    "build_peer",
    "faiss_threads",
    "index_bytes",
]

# Rows sampled to train k-means centroids, PQ codebooks and scalar-quantizer ranges: faiss
# wants at least 39 points per centroid and caps them at 256; 64 keeps a million-row build
# on two cores within a minute.
_TRAIN_PER_LIST = 64
_TRAIN_MIN = 65536
_KMEANS_ITERATIONS = 20
_SEED = 1234


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


def index_bytes(index: Any) -> int:
    """Resident bytes of a faiss index: codes, ids (8 per vector in IVF lists), HNSW links
    and coarse centroids, through refine and pre-transform wrappers."""
    if isinstance(index, faiss.IndexBinary):
        index = faiss.downcast_IndexBinary(index)
    else:
        index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return index_bytes(index.base_index) + index_bytes(index.refine_index)
    if isinstance(index, faiss.IndexPreTransform):
        return index_bytes(index.index)
    if isinstance(index, faiss.IndexHNSW | faiss.IndexBinaryHNSW):
        h = index.hnsw
        links = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return links + index_bytes(index.storage)
    if isinstance(index, faiss.IndexIVF | faiss.IndexBinaryIVF):
        return index.ntotal * (index.code_size + 8) + index_bytes(index.quantizer)
    return index.ntotal * index.code_size


def _training_rows(vectors: np.ndarray, count: int) -> np.ndarray:
    """A contiguous random sample of ``count`` rows (all rows when there are fewer)."""
    if count >= len(vectors):
        return vectors
    rows = np.sort(np.random.default_rng(_SEED).choice(len(vectors), count, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _binarize(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """One bit per dimension, set where ``x`` exceeds ``threshold``: ``[n, m / 8]`` bytes."""
    return np.packbits(x > threshold, axis=1)


@dataclass
class ShortlistIndex:
    """A built shortlist structure at one size ``Ds``: the faiss index and, for the binary
    codec, the per-dimension thresholds (database means) its bits are taken against."""

    index: Any
    spec: IndexSpec
    threshold: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Resident bytes (:func:`index_bytes`)."""
        return index_bytes(self.index)

    def search(self, queries: np.ndarray, k: int, spec: IndexSpec) -> np.ndarray:
        """The ``k`` best row ids of normalized ``queries [B, Ds]`` with ``spec``'s search
        settings (``ef_search`` raised to ``k``, ``nprobe`` capped at ``nlist``)."""
        index = self.index
        if spec.kind == "hnsw":
            index.hnsw.efSearch = max(spec.ef_search, k)
        elif spec.kind == "ivf":
            index.nprobe = min(spec.nprobe, index.nlist)
        x = queries if self.threshold is None else _binarize(queries, self.threshold)
        return index.search(x, k)[1].astype(np.int64, copy=False)


def _ivf(vectors: np.ndarray, spec: IndexSpec) -> Any:
    """AdANNS-IVF over ``vectors [N, Ds]``: k-means centroids on the first ``Dc`` dims."""
    n, ds = vectors.shape
    dc, nlist = spec.coarse_size(ds), spec.list_count(n)
    sample = _training_rows(vectors, max(_TRAIN_MIN, nlist * _TRAIN_PER_LIST))
    kmeans = faiss.Kmeans(dc, nlist, niter=_KMEANS_ITERATIONS, seed=_SEED)
    kmeans.train(np.ascontiguousarray(sample[:, :dc]))
    coarse = faiss.IndexFlatL2(dc)
    coarse.add(kmeans.centroids)
    # The IVF sees Ds-dim vectors; its quantizer keeps their first Dc dims and compares
    # them with the centroids: assignment and probing at Dc, list scanning at Ds.
    quantizer = (
        coarse
        if dc == ds
        else faiss.IndexPreTransform(faiss.RemapDimensionsTransform(ds, dc, False), coarse)
    )
    if spec.codec == "int8":
        # No residuals: each list stores the vectors themselves, quantized with one range.
        qt, l2 = faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
        index = faiss.IndexIVFScalarQuantizer(quantizer, ds, nlist, qt, l2, False)
    else:
        index = faiss.IndexIVFFlat(quantizer, ds, nlist)
    index.train(sample)  # the quantizer is full, so this trains the int8 ranges only
    index.add(vectors)
    return index


def build_index(vectors: np.ndarray, spec: IndexSpec) -> ShortlistIndex:
    """The shortlist structure of ``spec`` over normalized ``vectors [N, Ds]``, filled."""
    if spec.exact:
        raise ValueError("a flat float32 search is exact: it builds no index")
    n, d = vectors.shape
    with faiss_threads(spec.threads):
        if spec.codec == "binary":
            if d % 8:
                raise ValueError(f"a binary codec needs Ds a multiple of 8, got Ds={d}")
            threshold = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
            if spec.kind == "hnsw":
                index = faiss.IndexBinaryHNSW(d, spec.hnsw_m)
                index.hnsw.efConstruction = spec.ef_construction
            else:
                index = faiss.IndexBinaryFlat(d)
            index.add(_binarize(vectors, threshold))
            return ShortlistIndex(index, spec, threshold)
        if spec.kind == "ivf":
            return ShortlistIndex(_ivf(vectors, spec), spec)
        int8 = faiss.ScalarQuantizer.QT_8bit
        if spec.kind == "hnsw":
            if spec.codec == "int8":
                index = faiss.IndexHNSWSQ(d, int8, spec.hnsw_m)
            else:
                index = faiss.IndexHNSWFlat(d, spec.hnsw_m)
            index.hnsw.efConstruction = spec.ef_construction
        else:
            index = faiss.IndexScalarQuantizer(d, int8, faiss.METRIC_L2)
        if not index.is_trained:
            index.train(_training_rows(vectors, _TRAIN_MIN))
        index.add(vectors)
    return ShortlistIndex(index, spec)


def build_peer(vectors: np.ndarray, peer: PeerSpec, threads: int | None = None) -> Any:
    """The faiss-native index of ``peer`` over the normalized full-size ``vectors``, filled."""
    index = faiss.index_factory(vectors.shape[1], peer.factory, faiss.METRIC_L2)
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexRefine):
        base = faiss.downcast_index(base.base_index)
    if isinstance(base, faiss.IndexHNSW):
        base.hnsw.efConstruction = peer.ef_construction
    lists = base.nlist if isinstance(base, faiss.IndexIVF) else 1
    with faiss_threads(threads):
        if not index.is_trained:
            index.train(_training_rows(vectors, max(_TRAIN_MIN, lists * _TRAIN_PER_LIST)))
        index.add(vectors)
    return index


def _normalized_prefix(x: np.ndarray, m: int) -> np.ndarray:
    """A contiguous float32 copy of ``x[:, :m]`` with unit rows (all-zero rows stay zero)."""
    out = np.array(x[:, :m], dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(out)
    return out


def _row_sqnorms(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float32)
    faiss.fvec_norms_L2sqr(faiss.swig_ptr(out), faiss.swig_ptr(x), x.shape[1], x.shape[0])
    return out


@dataclass
class _Built:
    structure: str
    build: str
    truncate_dim: int
    build_s: float
    memory_bytes: int
    bytes_per_vector: float
    shares_database: bool


def _build_settings(spec: IndexSpec, ds: int, n: int) -> str:
    if spec.kind == "hnsw":
        return f"M={spec.hnsw_m} efConstruction={spec.ef_construction}"
    if spec.kind == "ivf":
        return f"nlist={spec.list_count(n)} Dc={spec.coarse_size(ds)}"
    return ""


class Retriever:
    """A database of features searchable at every truncation size (see module docstring).

    ``database`` is ``[N, d]`` float32 (other real dtypes are converted once), finite; it is
    kept as given (a memory map stays a memory map) and never copied per query. ``labels``
    (``[N]``) are needed by the table builders. ``index`` says how shortlists are searched
    unless a call passes its own spec; ``spec`` may be replaced later
    (``dataclasses.replace``) to change runtime settings such as ``threads``; structures
    already built are kept (one per build setting and size).
    """

    def __init__(
        self,
        database: np.ndarray,
        labels: np.ndarray | None = None,
        index: IndexSpec = DEFAULT_INDEX,
    ) -> None:
        db = check_features(database, "database")
        if db.shape[0] == 0 or db.shape[1] == 0:
            raise ValueError(f"database must be a non-empty 2-D array [N, d], got shape {db.shape}")
        self.database = db if db.dtype == np.float32 else db.astype(np.float32)
        self.labels = None if labels is None else check_labels(labels, db.shape[0], "labels")
        self.spec = self._spec(index)
        self._vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._indexes: dict[tuple, ShortlistIndex] = {}
        self._peers: dict[tuple[str, int], Any] = {}
        self._built: dict[tuple, _Built] = {}

    @property
    def size(self) -> int:
        """Number of database items ``N``."""
        return self.database.shape[0]

    @property
    def dim(self) -> int:
        """Full feature size ``d``."""
        return self.database.shape[1]

    def _spec(self, index: IndexSpec | None) -> IndexSpec:
        if index is None:
            return self.spec
        if not isinstance(index, IndexSpec):
            raise TypeError(f"index must be an IndexSpec, got {index!r}")
        return index

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
        q = check_features(queries, "queries")
        if q.shape[1] != self.dim:
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
                "flat",
                "",
                m,
                time.perf_counter() - start,
                0 if shared else store.nbytes,
                4.0 * m,
                shared,
            )
        return self._vectors[m]

    def shortlist_index(
        self, truncate_dim: int | None, index: IndexSpec | None = None
    ) -> ShortlistIndex:
        """The built :class:`ShortlistIndex` of ``index`` (default: the retriever's spec) at
        size ``m``, built on first use."""
        spec, m = self._spec(index), self.check_dim(truncate_dim)
        key = (spec.build_key, m)
        if key not in self._indexes:
            store = self._store(m)[0]
            start = time.perf_counter()
            built = build_index(store, spec)
            elapsed = time.perf_counter() - start
            self._indexes[key] = built
            nbytes = built.nbytes
            self._built[key] = _Built(
                spec.label,
                _build_settings(spec, m, self.size),
                m,
                elapsed,
                nbytes,
                nbytes / self.size,
                False,
            )
        return self._indexes[key]

    def _peer(self, peer: PeerSpec) -> Any:
        key = (peer.factory, peer.ef_construction)
        if key not in self._peers:
            store = self._store(self.dim)[0]
            start = time.perf_counter()
            index = build_peer(store, peer, self.spec.threads)
            elapsed, nbytes = time.perf_counter() - start, index_bytes(index)
            self._peers[key] = index
            built = _Built(
                "faiss", peer.factory, self.dim, elapsed, nbytes, nbytes / self.size, False
            )
            self._built[("peer", *key)] = built
        return self._peers[key]

    def prepare(
        self,
        truncate_dim: int | None = None,
        *,
        search: bool = True,
        index: IndexSpec | None = None,
    ) -> None:
        """Build what size ``m`` needs ahead of timing: the normalized copy, and the index
        of ``index`` (default: the retriever's spec) when ``search`` and it is not exact."""
        spec, m = self._spec(index), self.check_dim(truncate_dim)
        self._store(m)
        if search and not spec.exact:
            self.shortlist_index(m, spec)

    def prepare_pipeline(self, pipeline: Pipeline) -> None:
        """Build what ``pipeline`` needs ahead of timing: its shortlist index and rerank copy."""
        self.prepare(pipeline.shortlist_dim, index=pipeline.index)
        self.prepare(pipeline.rerank_dim, search=False)

    def prepare_peer(self, peer: PeerSpec) -> None:
        """Build the faiss-native index of ``peer`` ahead of timing."""
        self._peer(peer)

    def release(self, *, keep_vectors: bool = False) -> None:
        """Drop every index and peer built so far and, unless ``keep_vectors``, every
        per-size copy (build records are kept)."""
        self._indexes.clear()
        self._peers.clear()
        if not keep_vectors:
            self._vectors.clear()

    def stored_bytes(self, truncate_dim: int | None, index: IndexSpec | None = None) -> float:
        """Bytes per database vector of what a search at size ``m`` with ``index`` keeps:
        the built index (:func:`index_bytes`), or ``4·m`` for exact search."""
        spec, m = self._spec(index), self.check_dim(truncate_dim)
        if spec.exact:
            return 4.0 * m
        return self.shortlist_index(m, spec).nbytes / self.size

    def pipeline_bytes(
        self,
        shortlist_dim: int | None,
        rerank_dims: tuple[int | None, ...] = (),
        index: IndexSpec | None = None,
    ) -> float:
        """Bytes per database vector of a two-stage search: the shortlist's structure plus
        the float32 rerank copy at each distinct rerank size (the exact shortlist's own copy
        is not counted twice)."""
        spec, ds = self._spec(index), self.check_dim(shortlist_dim)
        stores = {self.check_dim(d) for d in rerank_dims} - ({ds} if spec.exact else set())
        return self.stored_bytes(ds, spec) + sum(4.0 * m for m in stores)

    def peer_bytes(self, peer: PeerSpec) -> float:
        """Bytes per database vector of ``peer``'s built index (:func:`index_bytes`)."""
        return index_bytes(self._peer(peer)) / self.size

    def index_table(self) -> pd.DataFrame:
        """Build time and memory of everything built so far, one row per structure and size.

        ``structure`` is ``"flat"`` (the normalized copy: the exact index and the rerank
        store), the index spec's label (e.g. ``"hnsw"``, ``"ivf-int8"``) or ``"faiss"`` (a
        peer); ``build`` its build settings (the factory string for a peer);
        ``memory_mb`` is 0 when the copy is the caller's database itself
        (``shares_database``); ``bytes_per_vector`` counts it anyway.
        """
        cols = [
            "structure",
            "build",
            "truncate_dim",
            "build_s",
            "memory_mb",
            "bytes_per_vector",
            "shares_database",
        ]
        rows = [
            {
                "structure": b.structure,
                "build": b.build,
                "truncate_dim": b.truncate_dim,
                "build_s": b.build_s,
                "memory_mb": b.memory_bytes / 2**20,
                "bytes_per_vector": b.bytes_per_vector,
                "shares_database": b.shares_database,
            }
            for b in self._built.values()
        ]
        return pd.DataFrame(rows, columns=cols).sort_values(["structure", "build", "truncate_dim"])

    def search(
        self,
        queries: np.ndarray,
        truncate_dim: int | None,
        k: int,
        index: IndexSpec | None = None,
    ) -> np.ndarray:
        """The ``k`` nearest database rows of each query at size ``m`` as ``index`` (default:
        the retriever's spec) searches them, ``[Nq, k]`` int64 (``-1``: fewer found)."""
        spec, m = self._spec(index), self.check_dim(truncate_dim)
        k = self.check_k(k)
        q = self._queries(queries, m)
        out = np.empty((q.shape[0], k), dtype=np.int64)
        step = spec.batch_size
        if spec.exact:
            store = self._store(m)[0]
            with faiss_threads(spec.threads):
                for a in range(0, q.shape[0], step):
                    out[a : a + step] = faiss.knn(q[a : a + step], store, k)[1]
        else:
            built = self.shortlist_index(m, spec)
            with faiss_threads(spec.threads):
                for a in range(0, q.shape[0], step):
                    out[a : a + step] = built.search(q[a : a + step], k, spec)
        return out

    def rerank(
        self,
        queries: np.ndarray,
        candidates: np.ndarray,
        truncate_dim: int | None = None,
        index: IndexSpec | None = None,
    ) -> np.ndarray:
        """Reorder each query's candidate row ids by exact L2 distance at size ``m``.

        ``candidates`` is ``[Nq, K]`` (``-1`` entries go last); ties keep the candidate
        order. One batched faiss call per block of queries computes all ``K`` distances;
        ``index`` (default: the retriever's spec) gives the threads and block size.
        """
        spec, m = self._spec(index), self.check_dim(truncate_dim)
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
        n_cand, step = cand.shape[1], spec.batch_size
        for a in range(0, q.shape[0], step):
            block = cand[a : a + step]
            valid = block >= 0
            safe = np.ascontiguousarray(np.where(valid, block, 0), dtype=np.int64)
            ip = np.empty(safe.shape, dtype=np.float32)
            qb = q[a : a + step]
            with faiss_threads(spec.threads):
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
        shortlist_dim: int | None,
        rerank_dim: int | None = None,
        shortlist_size: int = 200,
        index: IndexSpec | None = None,
    ) -> np.ndarray:
        """Adaptive retrieval: shortlist ``shortlist_size`` at ``Ds`` as ``index`` (default:
        the retriever's spec) searches, rerank at ``Dr`` (full size by default); ``[Nq, K]``
        ranked row ids."""
        k = self.check_k(shortlist_size, "shortlist_size")
        shortlist = self.search(queries, shortlist_dim, k, index)
        return self.rerank(queries, shortlist, rerank_dim, index)

    def pipeline(self, queries: np.ndarray, pipeline: Pipeline) -> np.ndarray:
        """The ranking of an MRL :class:`~mrl_analysis.retrieval.plan.Pipeline`, ``[Nq, K]``."""
        self.check_dim(pipeline.rerank_dim)
        return self.adaptive(
            queries,
            pipeline.shortlist_dim,
            pipeline.rerank_dim,
            pipeline.shortlist_size,
            pipeline.index,
        )

    def peer(self, queries: np.ndarray, peer: PeerSpec, k: int) -> np.ndarray:
        """The ``k`` best rows of each query by a faiss-native ``peer`` at full size, with its
        search settings; ``[Nq, k]`` int64 (``-1``: fewer found)."""
        k = self.check_k(k)
        q = self._queries(queries, self.dim)
        index = self._peer(peer)
        if peer.search:
            faiss.ParameterSpace().set_index_parameters(index, peer.search)
        out = np.empty((q.shape[0], k), dtype=np.int64)
        step = self.spec.batch_size
        with faiss_threads(self.spec.threads):
            for a in range(0, q.shape[0], step):
                out[a : a + step] = index.search(q[a : a + step], k)[1]
        return out

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
