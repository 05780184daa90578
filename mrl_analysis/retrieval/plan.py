"""What to run: index specs, pipelines, funnels and the plan of a retrieval study (paper §4.3,
Tables 11-13, 30-31; AdANNS, Rege et al. 2023).

* **Index spec** (:class:`IndexSpec`): how a shortlist at ``Ds`` is searched: the structure
  (``"flat"``: every vector scanned; ``"hnsw"``: a graph; ``"ivf"``: an inverted file whose
  centroids are learned on the first ``Dc`` dims, AdANNS-style) and the codec of the stored
  vectors (``"float32"``, ``"int8"``: faiss's scalar quantizer; ``"binary"``: the sign of
  each dimension around its database mean, searched by Hamming distance).

* **Adaptive** (AR): a shortlist of ``K`` (default 200) at a small size ``Ds``, reranked
  exactly at a larger size ``Dr``.
* **Funnel** (:class:`Funnel`): a shortlist at ``Ds``, then a cascade of reranks, stage
  ``i`` reranking the top ``K_i`` of the current ranking at size ``Dr_i`` (e.g.
  ``200→100→50→25→10`` at ``32→64→128→256→full``). Candidates a stage does not rerank
  keep their earlier order behind the reranked ones, so the ranking stays ``K_1`` long; its
  first ``K_last`` entries are exactly the authors' funnel output (they keep only those).
* **Shortlist ablation**: adaptive retrieval at one ``Ds`` over growing ``K``.
* **Frontier**: :class:`Pipeline` (an MRL two-stage pipeline: shortlist ``K`` at ``Ds`` with
  an index spec, exact float32 rerank at ``Dr``) and :class:`PeerSpec` (a faiss-native
  pipeline over the full embedding, e.g. ``IndexRefineFlat`` over IVF-PQ, or HNSW at full
  size), each one point of the quality / time / bytes frontier.

:class:`RetrievalPlan` holds these choices (and the ``ks`` of the metrics) as one value, so
that they travel from a notebook's parameters to the table builders unchanged. Every class
here is a frozen value without faiss objects; :mod:`.index` builds what they describe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mrl_analysis.core.checks import check_choice, check_int, check_ks, check_sizes
from mrl_analysis.core.stats import N_BOOT
from mrl_analysis.retrieval.metrics import DEFAULT_KS

__all__ = [
    "CODECS",
    "DEFAULT_ABLATION_SIZES",
    "DEFAULT_FUNNEL_SHORTLISTS",
    "DEFAULT_INDEX",
    "INDEX_KINDS",
    "Codec",
    "Funnel",
    "IndexKind",
    "IndexSpec",
    "PeerSpec",
    "Pipeline",
    "RetrievalPlan",
    "default_funnels",
    "default_peers",
    "default_pipelines",
    "nearest_size",
]

DEFAULT_FUNNEL_SHORTLISTS: tuple[int, ...] = (200, 100, 50, 25, 10)
DEFAULT_ABLATION_SIZES: tuple[int, ...] = (100, 200, 400, 800, 1600, 2048)

IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
Codec = Literal["float32", "int8", "binary"]
CODECS: tuple[str, ...] = ("float32", "int8", "binary")
# Queries per faiss call: bounds the [B, K] result and distance buffers.
_QUERY_BATCH = 4096
# faiss's k-means wants at least 39 training points per centroid.
_MIN_POINTS_PER_LIST = 39


def _positive(values: Sequence[int], name: str) -> tuple[int, ...]:
    return tuple(check_int(v, f"{name} entry", low=1) for v in values)


def nearest_size(sizes: Sequence[int], target: int) -> int:
    """The size in ``sizes`` nearest ``target`` (the smaller on a tie)."""
    values = [check_int(m, "sizes entry", low=1) for m in sizes]
    if not values:
        raise ValueError("sizes is empty: give at least one representation size")
    return min(values, key=lambda m: (abs(m - target), m))


@dataclass(frozen=True)
class IndexSpec:
    """How a shortlist is searched: one value from the notebook down to the index builder.

    * ``kind``: ``"flat"`` (every stored vector scanned), ``"hnsw"`` (faiss HNSW graph) or
      ``"ivf"`` (AdANNS-IVF: ``nlist`` centroids learned by k-means on the first
      ``coarse_dim`` = ``Dc`` dims of the shortlist vectors, lists holding the ``Ds``-dim
      vectors; a query probes its ``nprobe`` nearest centroids at ``Dc`` and scans those
      lists at ``Ds``; ``Dc <= Ds``, ``None``: ``Dc = Ds``, a plain IVF);
    * ``codec``: how the ``Ds``-dim vectors are stored and compared: ``"float32"``,
      ``"int8"`` (faiss's 8-bit scalar quantizer, one byte per dim, trained ranges) or
      ``"binary"`` (one bit per dim: above or below the database mean of that dim, compared
      by Hamming distance; ``Ds`` a multiple of 8; flat or HNSW only);
    * ``hnsw_m``, ``ef_construction``, ``ef_search``: HNSW's links per node, build-time and
      search-time beam (``ef_search`` is raised to ``k`` when a search asks for more);
    * ``nlist``, ``nprobe``, ``coarse_dim``: the IVF's lists (``None``: about ``4·√N``, a
      power of two, at most ``N / 39``), lists probed per query (capped at ``nlist``), ``Dc``;
    * ``threads``: faiss's OpenMP threads for builds, searches and reranks (restored
      afterwards; ``None`` keeps faiss's global setting);
    * ``batch_size``: queries per faiss call.

    Build settings (:attr:`build_key`) and search settings (``ef_search``, ``nprobe``,
    ``threads``, ``batch_size``) are kept apart: specs differing only in search settings
    share one built index. Reranking stays exact float32 for every kind.
    """

    kind: IndexKind = "flat"
    codec: Codec = "float32"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int = 16
    coarse_dim: int | None = None
    threads: int | None = None
    batch_size: int = _QUERY_BATCH

    def __post_init__(self) -> None:
        check_choice(self.kind, INDEX_KINDS, "index kind")
        check_choice(self.codec, CODECS, "codec")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "batch_size"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low=1))
        for name in ("threads", "nlist", "coarse_dim"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), name, low=1))
        if self.coarse_dim is not None and self.kind != "ivf":
            raise ValueError(f"coarse_dim (Dc) belongs to kind='ivf', not {self.kind!r}")
        if self.kind == "ivf" and self.codec == "binary":
            raise ValueError("a binary codec is searched flat or by HNSW, not by IVF")

    @property
    def exact(self) -> bool:
        """Whether searches are exact (no index beyond the normalized float32 copy)."""
        return self.kind == "flat" and self.codec == "float32"

    @property
    def label(self) -> str:
        """``kind``, plus the codec unless float32: ``"ivf-int8"``, ``"hnsw-binary"``."""
        return self.kind if self.codec == "float32" else f"{self.kind}-{self.codec}"

    @property
    def build_key(self) -> tuple:
        """The settings that shape the built index (search settings excluded)."""
        graph = (self.hnsw_m, self.ef_construction) if self.kind == "hnsw" else ()
        lists = (self.nlist, self.coarse_dim) if self.kind == "ivf" else ()
        return (self.kind, self.codec, *graph, *lists)

    def coarse_size(self, shortlist_dim: int) -> int:
        """``Dc`` at shortlisting size ``Ds``: ``coarse_dim`` (at most ``Ds``) or ``Ds``."""
        ds = check_int(shortlist_dim, "Ds", low=1)
        if self.coarse_dim is None:
            return ds
        if self.coarse_dim > ds:
            raise ValueError(f"coarse_dim Dc={self.coarse_dim} must be <= Ds={ds}")
        return self.coarse_dim

    def list_count(self, database_size: int) -> int:
        """``nlist`` for ``database_size`` items (see the class docstring)."""
        n = check_int(database_size, "database_size", low=1)
        cap = max(1, n // _MIN_POINTS_PER_LIST)
        if self.nlist is not None:
            return min(self.nlist, n)
        return min(2 ** round(math.log2(4 * math.sqrt(n))), cap)

    def describe(self, shortlist_dim: int, database_size: int) -> str:
        """The spec's settings at ``Ds`` for a table: ``"IVF1024 Dc=16 nprobe=16, int8"``."""
        codec = "" if self.codec == "float32" else f", {self.codec}"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m} efSearch={self.ef_search}{codec}"
        if self.kind == "ivf":
            nlist = self.list_count(database_size)
            dc = self.coarse_size(shortlist_dim)
            return f"IVF{nlist} Dc={dc} nprobe={min(self.nprobe, nlist)}{codec}"
        return f"flat{codec}"


#: Exact search with faiss's global thread setting.
DEFAULT_INDEX = IndexSpec()


@dataclass(frozen=True)
class Pipeline:
    """An MRL two-stage pipeline: a shortlist of ``shortlist_size`` = ``K`` at ``Ds`` searched
    as ``index`` says, reranked exactly in float32 at ``Dr`` (``None``: the full size).

    ``Dr >= Ds`` (checked against the database): with a quantized or approximate shortlist
    ``Dr = Ds`` is a meaningful rerank too.
    """

    shortlist_dim: int
    rerank_dim: int | None = None
    shortlist_size: int = 200
    index: IndexSpec = DEFAULT_INDEX

    def __post_init__(self) -> None:
        object.__setattr__(self, "shortlist_dim", check_int(self.shortlist_dim, "Ds", low=1))
        if self.rerank_dim is not None:
            dr = check_int(self.rerank_dim, "Dr", low=self.shortlist_dim)
            object.__setattr__(self, "rerank_dim", dr)
        object.__setattr__(self, "shortlist_size", check_int(self.shortlist_size, "K", low=1))
        if not isinstance(self.index, IndexSpec):
            raise TypeError(f"index must be an IndexSpec, got {self.index!r}")
        self.index.coarse_size(self.shortlist_dim)


@dataclass(frozen=True)
class PeerSpec:
    """A faiss-native pipeline over the full embedding (the peers MRL's nesting must beat).

    * ``factory``: a :func:`faiss.index_factory` string over the full size, e.g.
      ``"HNSW32,Flat"`` (HNSW at full size), ``"IVF1024,PQ64,RFlat"`` (``IndexRefineFlat``
      over IVF-PQ), ``"HNSW32,SQ8,RFlat"`` (over an int8 HNSW: one float32 copy in all);
    * ``search``: its search settings as a :class:`faiss.ParameterSpace` string, e.g.
      ``"nprobe=16,k_factor_rf=4"`` (``k_factor_rf``: the refine's shortlist is
      ``k_factor_rf·k``), ``"efSearch=64"``;
    * ``ef_construction``: the HNSW build beam (the factory string cannot set it).

    Specs differing only in ``search`` share one built index.
    """

    factory: str
    search: str = ""
    ef_construction: int = 40

    def __post_init__(self) -> None:
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise ValueError(f"factory must be a faiss index_factory string, got {self.factory!r}")
        if not isinstance(self.search, str):
            raise TypeError(f"search must be a faiss ParameterSpace string, got {self.search!r}")
        object.__setattr__(
            self, "ef_construction", check_int(self.ef_construction, "ef_construction", low=1)
        )

    @property
    def label(self) -> str:
        """``"<factory> <search>"``, as the tables and figures name the configuration."""
        return f"{self.factory} {self.search}".strip()


@dataclass(frozen=True)
class Funnel:
    """A funnel: shortlist ``shortlist_sizes[0]`` at ``shortlist_dim``, then stage ``i``
    reranks the top ``shortlist_sizes[i]`` at ``rerank_dims[i]``."""

    shortlist_dim: int
    rerank_dims: tuple[int, ...]
    shortlist_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        dims = _positive(self.rerank_dims, "rerank_dims")
        sizes = _positive(self.shortlist_sizes, "shortlist_sizes")
        object.__setattr__(self, "shortlist_dim", check_int(self.shortlist_dim, "Ds", low=1))
        object.__setattr__(self, "rerank_dims", dims)
        object.__setattr__(self, "shortlist_sizes", sizes)
        if not dims or len(dims) != len(sizes):
            raise ValueError(
                f"a funnel needs one shortlist length per rerank size, got rerank_dims {dims} "
                f"and shortlist_sizes {sizes}"
            )
        if any(b > a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise ValueError(f"shortlist_sizes must be non-increasing, got {sizes}")

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
    ``32→64→128→256→2048`` over ``200→100→50→25→10``). ``shortlist_dims`` defaults to every
    size but the largest.
    """
    sizes = sorted({check_int(m, "nesting entry", low=1) for m in nesting})
    if not sizes:
        raise ValueError("nesting is empty: give the representation sizes")
    full = sizes[-1]
    dims = sizes[:-1] if shortlist_dims is None else list(_positive(shortlist_dims, "Ds"))
    funnels = []
    for ds in dims:
        larger = [m for m in sizes if m > ds]
        stages = min(len(shortlist_sizes), len(larger))
        if stages == 0:
            continue
        rerank = (*larger[: stages - 1], full)
        funnels.append(Funnel(ds, rerank, tuple(shortlist_sizes[:stages])))
    return funnels


def default_pipelines(
    nesting: Sequence[int], database_size: int, shortlist_size: int = 200
) -> list[Pipeline]:
    """A frontier sweep of MRL pipelines over ``nesting`` (the full size last), ``K`` =
    ``shortlist_size`` (capped at the database size), each size the nesting size nearest
    the one named:

    * AdANNS-IVF, float32 lists: ``(Dc, Ds)`` in ``(16, 32), (16, 64), (32, 64)`` and the
      plain IVF ``(64, 64)``, ``nprobe`` in 4, 16, 64, reranked at full size;
    * AdANNS-IVF with int8 lists at ``(16, 64)``, ``nprobe`` 16 and 64;
    * the ``(64, 64)`` IVF at ``nprobe`` 8 with shorter shortlists, ``K/4`` and ``K/2``;
    * HNSW at ``Ds = 32`` (``efSearch`` 64);
    * int8 flat shortlists at ``Ds`` 32, 64, 128 and binary ones at 64, 128, 256 and the full
      size (multiples of 8 only), reranked at full size;
    * fewer bytes: the ``(16, 64)`` IVF (``nprobe`` 16) reranked at 128 and 256, the int8
      ``Ds = 64`` shortlist reranked at 128.

    Exact (flat float32) shortlists are not repeated here: the plan's adaptive grid has them.
    """
    sizes = sorted({check_int(m, "nesting entry", low=1) for m in nesting})
    full, smaller = sizes[-1], sizes[:-1]
    if not smaller:
        return []
    k = min(check_int(shortlist_size, "shortlist_size", low=1), check_int(database_size, "N"))

    def near(target: int) -> int:
        return nearest_size(smaller, target)

    def ivf(dc: int, ds: int, nprobe: int, codec: Codec = "float32") -> IndexSpec:
        return IndexSpec("ivf", codec, nprobe=nprobe, coarse_dim=min(dc, ds))

    runs: list[Pipeline] = []
    for dc, ds in dict.fromkeys([(16, 32), (16, 64), (32, 64), (64, 64)]):
        runs += [Pipeline(near(ds), None, k, ivf(near(dc), near(ds), p)) for p in (4, 16, 64)]
    runs += [Pipeline(near(64), None, k, ivf(near(16), near(64), p, "int8")) for p in (16, 64)]
    # Shorter shortlists: the rerank of K full-size vectors is a fixed cost per query.
    runs += [Pipeline(near(64), None, max(1, k // q), ivf(near(64), near(64), 8)) for q in (4, 2)]
    runs.append(Pipeline(near(32), None, k, IndexSpec("hnsw", ef_search=64)))
    runs += [Pipeline(near(d), None, k, IndexSpec(codec="int8")) for d in (32, 64, 128)]
    bits = dict.fromkeys(m for m in (near(64), near(128), near(256), full) if m % 8 == 0)
    runs += [Pipeline(d, None, k, IndexSpec(codec="binary")) for d in bits]
    for dr in (near(128), near(256)):
        if dr > near(64):
            runs.append(Pipeline(near(64), dr, k, ivf(near(16), near(64), 16)))
    if near(128) > near(64):
        runs.append(Pipeline(near(64), near(128), k, IndexSpec(codec="int8")))
    # Nesting ladders with few sizes map several targets to one size: keep each run once.
    return list(dict.fromkeys(runs))


def default_peers(dim: int, database_size: int) -> list[PeerSpec]:
    """faiss-native pipelines over the full ``dim``-d embedding, each with a ladder of search
    settings so one of them can be matched to any recall:

    * ``"HNSW32,Flat"`` (HNSW at full size), ``efSearch`` 16 … 512;
    * ``IndexRefineFlat`` over IVF-PQ (``nlist`` as :meth:`IndexSpec.list_count`, ``dim/8``
      sub-quantizers of 8 bits; 4 bits below 10,000 items, too few to train 256 codes; no
      polysemous training, which only speeds up Hamming filtering the refine makes moot),
      ``(nprobe, k_factor_rf)`` from ``(4, 4)`` to ``(256, 16)``;
    * ``IndexRefineFlat`` over an int8 HNSW (``"HNSW32,SQ8,RFlat"``), ``efSearch`` 32, 128.
    """
    d = check_int(dim, "dim", low=1)
    n = check_int(database_size, "database_size", low=1)
    nlist = IndexSpec("ivf").list_count(n)
    m = max(q for q in range(1, max(1, d // 8) + 1) if d % q == 0)
    bits = "" if n >= 10_000 else "x4"
    peers = [PeerSpec("HNSW32,Flat", f"efSearch={ef}") for ef in (16, 32, 64, 128, 256, 512)]
    probes = [(4, 4), (16, 4), (16, 16), (64, 16), (256, 16)]
    peers += [
        PeerSpec(f"IVF{nlist},PQ{m}{bits}np,RFlat", f"nprobe={min(p, nlist)},k_factor_rf={kf}")
        for p, kf in dict.fromkeys((min(p, nlist), kf) for p, kf in probes)
    ]
    peers += [PeerSpec("HNSW32,SQ8,RFlat", f"efSearch={ef},k_factor_rf=4") for ef in (32, 128)]
    return peers


@dataclass(frozen=True)
class RetrievalPlan:
    """The retrieval runs of a nested model and the ``ks`` they are scored at.

    * ``ks``: the metrics' cut-offs (:func:`~mrl_analysis.retrieval.metrics.retrieval_metrics`);
    * ``shortlist_size``: ``K`` of the adaptive runs (capped at the database size);
    * ``funnel_shortlists``, ``funnel_dims``: the funnels of :func:`default_funnels`
      (lengths capped at the database size; ``funnel_dims=None``: every size but the full);
    * ``ablation_dim``, ``ablation_sizes``: the shortlist-length ablation at ``ablation_dim``
      (``None``: the size nearest 16) reranked at full size, over ``ablation_sizes``
      (lengths above the database size are skipped);
    * ``frontier``: whether to run the frontier: ``pipelines`` (MRL pipelines; ``None``:
      :func:`default_pipelines`) and ``peers`` (faiss-native ones; ``None``:
      :func:`default_peers`), see :meth:`frontier_runs`;
    * ``n_boot``: bootstrap resamples over queries for every interval (``None``: none).

    Lists are accepted and stored as tuples, so a plan is hashable and never changes.
    """

    ks: Sequence[int] = DEFAULT_KS
    shortlist_size: int = 200
    funnel_shortlists: Sequence[int] = DEFAULT_FUNNEL_SHORTLISTS
    funnel_dims: Sequence[int] | None = None
    ablation_dim: int | None = None
    ablation_sizes: Sequence[int] = DEFAULT_ABLATION_SIZES
    frontier: bool = False
    pipelines: Sequence[Pipeline] | None = None
    peers: Sequence[PeerSpec] | None = None
    n_boot: int | None = N_BOOT

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "ks", tuple(check_ks(self.ks)))
        set_(self, "shortlist_size", check_int(self.shortlist_size, "shortlist_size", low=1))
        set_(self, "funnel_shortlists", _positive(self.funnel_shortlists, "funnel_shortlists"))
        if self.funnel_dims is not None:
            set_(self, "funnel_dims", _positive(self.funnel_dims, "funnel_dims"))
        if self.ablation_dim is not None:
            set_(self, "ablation_dim", check_int(self.ablation_dim, "ablation_dim", low=1))
        set_(self, "ablation_sizes", _positive(self.ablation_sizes, "ablation_sizes"))
        if not isinstance(self.frontier, bool):
            raise TypeError(f"frontier must be True or False, got {self.frontier!r}")
        for name, kind in (("pipelines", Pipeline), ("peers", PeerSpec)):
            runs = getattr(self, name)
            if runs is not None:
                bad = [r for r in runs if not isinstance(r, kind)]
                if bad:
                    raise TypeError(f"{name} must hold {kind.__name__} values, got {bad[0]!r}")
                set_(self, name, tuple(runs))
        if self.n_boot is not None:
            set_(self, "n_boot", check_int(self.n_boot, "n_boot", low=1))

    def funnels(self, sizes: Sequence[int], database_size: int) -> list[Funnel]:
        """The plan's funnels over ``sizes`` for a database of ``database_size`` items."""
        n = check_int(database_size, "database_size", low=1)
        return default_funnels(sizes, [min(k, n) for k in self.funnel_shortlists], self.funnel_dims)

    def ablation_size(self, sizes: Sequence[int]) -> int:
        """``ablation_dim``, or the size in ``sizes`` nearest 16 (the smaller on a tie)."""
        if self.ablation_dim is not None:
            return self.ablation_dim
        return nearest_size(sizes, 16)

    def frontier_runs(
        self, sizes: Sequence[int], database_size: int
    ) -> tuple[list[Pipeline], list[PeerSpec]]:
        """The frontier's MRL pipelines and faiss peers over ``sizes`` (the full size last)
        for ``database_size`` items: none unless ``frontier``; shortlists capped at ``N``."""
        if not self.frontier:
            return [], []
        dims = check_sizes(sizes, max(sizes), "sizes")
        n = check_int(database_size, "database_size", low=1)
        if self.pipelines is None:
            pipelines = default_pipelines(dims, n, self.shortlist_size)
        else:
            pipelines = [
                replace(p, shortlist_size=min(p.shortlist_size, n)) for p in self.pipelines
            ]
        peers = default_peers(dims[-1], n) if self.peers is None else list(self.peers)
        return pipelines, peers
