"""What to run: funnels and the plan of a retrieval study (paper §4.3, Tables 11-13, 30-31).

* **Adaptive** (AR): a shortlist of ``K`` (default 200) at a small size ``Ds``, reranked
  exactly at a larger size ``Dr``.
* **Funnel** (:class:`Funnel`): a shortlist at ``Ds``, then a cascade of reranks, stage
  ``i`` reranking the top ``K_i`` of the current ranking at size ``Dr_i`` (e.g.
  ``200→100→50→25→10`` at ``32→64→128→256→full``). Candidates a stage does not rerank
  keep their earlier order behind the reranked ones, so the ranking stays ``K_1`` long; its
  first ``K_last`` entries are exactly the authors' funnel output (they keep only those).
* **Shortlist ablation**: adaptive retrieval at one ``Ds`` over growing ``K``.

:class:`RetrievalPlan` holds these choices (and the ``ks`` of the metrics) as one value, so
that they travel from a notebook's parameters to the table builders unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mrl_analysis.core.checks import check_int, check_ks
from mrl_analysis.retrieval.metrics import DEFAULT_KS

__all__ = [
    "DEFAULT_ABLATION_SIZES",
    "DEFAULT_FUNNEL_SHORTLISTS",
    "Funnel",
    "RetrievalPlan",
    "default_funnels",
]

DEFAULT_FUNNEL_SHORTLISTS: tuple[int, ...] = (200, 100, 50, 25, 10)
DEFAULT_ABLATION_SIZES: tuple[int, ...] = (100, 200, 400, 800, 1600, 2048)


def _positive(values: Sequence[int], name: str) -> tuple[int, ...]:
    return tuple(check_int(v, f"{name} entry", low=1) for v in values)


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


@dataclass(frozen=True)
class RetrievalPlan:
    """The retrieval runs of a nested model and the ``ks`` they are scored at.

    * ``ks``: the metrics' cut-offs (:func:`~mrl_analysis.retrieval.metrics.retrieval_metrics`);
    * ``shortlist_size``: ``K`` of the adaptive runs (capped at the database size);
    * ``funnel_shortlists``, ``funnel_dims``: the funnels of :func:`default_funnels`
      (lengths capped at the database size; ``funnel_dims=None``: every size but the full);
    * ``ablation_dim``, ``ablation_sizes``: the shortlist-length ablation at ``ablation_dim``
      (``None``: the size nearest 16) reranked at full size, over ``ablation_sizes``
      (lengths above the database size are skipped).

    Lists are accepted and stored as tuples, so a plan is hashable and never changes.
    """

    ks: Sequence[int] = DEFAULT_KS
    shortlist_size: int = 200
    funnel_shortlists: Sequence[int] = DEFAULT_FUNNEL_SHORTLISTS
    funnel_dims: Sequence[int] | None = None
    ablation_dim: int | None = None
    ablation_sizes: Sequence[int] = DEFAULT_ABLATION_SIZES

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

    def funnels(self, sizes: Sequence[int], database_size: int) -> list[Funnel]:
        """The plan's funnels over ``sizes`` for a database of ``database_size`` items."""
        lengths = [min(k, int(database_size)) for k in self.funnel_shortlists]
        return default_funnels(sizes, lengths, self.funnel_dims)

    def ablation_size(self, sizes: Sequence[int]) -> int:
        """``ablation_dim``, or the size in ``sizes`` nearest 16 (the smaller on a tie)."""
        if self.ablation_dim is not None:
            return self.ablation_dim
        return min(sizes, key=lambda m: (abs(m - 16), m))
