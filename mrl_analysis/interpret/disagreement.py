"""Samples on which nesting sizes disagree (paper §5 and Appendix J, "model disagreement").

Between a ``small`` and a ``large`` size, a sample is

* ``fixed``: wrong at the small size and right at the large one (the usual direction:
  more capacity resolves it), or
* ``broken``: right at the small size and wrong at the large one (paper Figure 12: some
  instances are better classified with fewer dimensions).

Each case is labelled by where its wrong prediction falls, as the paper does: ``within
superclass`` (confusion among sibling classes, e.g. one snake species for another under
"serpent") or ``outside superclass`` (another kind of object, e.g. distracted by clutter).
Cases are ranked by how confidently both sizes commit to their different answers.

Everything works on plain arrays (logits ``[G, N, C]``, labels, nesting);
:func:`~mrl_analysis.interpret.study.cache_disagreements` reads them from an
:class:`~mrl_analysis.cache.reader.EmbeddingCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_int, check_scores
from mrl_analysis.core.numeric import predictions, softmax
from mrl_analysis.core.stats import N_BOOT, bootstrap_means, bootstrap_ratios
from mrl_analysis.data.hierarchy import SuperclassMap

__all__ = [
    "DIRECTIONS",
    "case_labels",
    "disagreement_summary",
    "find_disagreements",
    "pairwise_disagreement",
]

Direction = Literal["fixed", "broken", "both"]
#: The two kinds of disagreement, in the order tables list them.
DIRECTIONS = ("fixed", "broken")
WITHIN, OUTSIDE = "within superclass", "outside superclass"


def _pick(sizes: list[int], value: int | None, default: int, what: str) -> int:
    m = default if value is None else check_int(value, what)
    if m not in sizes:
        raise ValueError(f"{what}={m} is not one of the sizes {sizes}")
    return m


def find_disagreements(
    logits: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    small: int | None = None,
    large: int | None = None,
    smap: SuperclassMap | None = None,
    class_names: Sequence[str] | None = None,
    sample_ids: Sequence[str] | None = None,
    direction: Direction = "both",
    top: int | None = None,
) -> pd.DataFrame:
    """Ranked samples on which sizes ``small`` and ``large`` disagree, one row per case.

    ``logits [G, N, C]`` (one row per size in ``nesting``; a memory-mapped cache array is
    read one size at a time), ``labels [N]``. ``small``/``large`` default to the smallest
    and largest size. ``smap`` (a :class:`~mrl_analysis.data.hierarchy.SuperclassMap`)
    labels each case's ``confusion``; without it the column is empty. ``top`` keeps the
    best ``top`` cases per direction.

    Columns: ``direction`` (``fixed``/``broken``), ``rank`` (1 = most confident, per
    direction), ``sample_index``, ``sample_id``, ``label``, ``small_dim``, ``large_dim``,
    ``pred_small``, ``pred_large``, ``prob_small``, ``prob_large`` (each size's
    probability of its own prediction), ``score`` (the smaller of the two),
    ``wrong_pred`` (the wrong one of the two predictions), ``n_sizes_correct`` (over all
    of ``nesting``), ``true_superclass``, ``wrong_superclass``, ``confusion``, and the
    names ``label_name``, ``pred_small_name``, ``pred_large_name`` when ``class_names``
    is given.
    """
    scores, labels, sizes = check_scores(logits, labels, nesting, name="logits")
    if direction not in ("fixed", "broken", "both"):
        raise ValueError(f"direction must be 'fixed', 'broken' or 'both', not {direction!r}")
    lo = _pick(sizes, small, sizes[0], "small")
    hi = _pick(sizes, large, sizes[-1], "large")
    if lo >= hi:
        raise ValueError(f"small ({lo}) must be a smaller size than large ({hi})")
    if top is not None:
        check_int(top, "top", low=0)
    n, num_classes = scores.shape[1], scores.shape[2]
    if smap is not None and smap.index.shape != (num_classes,):
        raise ValueError(
            f"the superclass map covers {smap.index.shape[0]} classes, the logits {num_classes}"
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for {num_classes} classes")
    if sample_ids is not None and len(sample_ids) != n:
        raise ValueError(f"{len(sample_ids)} sample_ids for {n} samples")

    correct = predictions(scores) == labels[None, :]
    probs_small = softmax(scores[sizes.index(lo)])
    probs_large = softmax(scores[sizes.index(hi)])
    pred_small, pred_large = probs_small.argmax(axis=1), probs_large.argmax(axis=1)
    ok_small, ok_large = pred_small == labels, pred_large == labels
    wanted = DIRECTIONS if direction == "both" else (direction,)
    masks = {"fixed": ~ok_small & ok_large, "broken": ok_small & ~ok_large}

    rows = np.concatenate([np.flatnonzero(masks[d]) for d in wanted]).astype(np.int64)
    kind = np.concatenate([np.full(int(masks[d].sum()), d, dtype=object) for d in wanted])
    prob_small = probs_small[rows, pred_small[rows]]
    prob_large = probs_large[rows, pred_large[rows]]
    wrong = np.where(kind == "fixed", pred_small[rows], pred_large[rows])
    table = pd.DataFrame(
        {
            "direction": kind,
            "sample_index": rows,
            "sample_id": None if sample_ids is None else np.asarray(sample_ids)[rows],
            "label": labels[rows],
            "small_dim": lo,
            "large_dim": hi,
            "pred_small": pred_small[rows],
            "pred_large": pred_large[rows],
            "prob_small": prob_small,
            "prob_large": prob_large,
            "score": np.minimum(prob_small, prob_large),
            "wrong_pred": wrong,
            "n_sizes_correct": correct[:, rows].sum(axis=0),
        }
    )
    table = _label_confusion(table, smap)
    if class_names is not None:
        names = np.asarray(class_names, dtype=object)
        for column in ("label", "pred_small", "pred_large"):
            table[f"{column}_name"] = names[table[column].to_numpy()]

    table["direction"] = pd.Categorical(table["direction"], categories=list(wanted))
    table = table.sort_values(
        ["direction", "score", "sample_index"], ascending=[True, False, True], kind="stable"
    )
    table.insert(1, "rank", table.groupby("direction", observed=True).cumcount() + 1)
    if top is not None:
        table = table[table["rank"] <= top]
    table["direction"] = table["direction"].astype(str)
    return table.reset_index(drop=True)


def _label_confusion(table: pd.DataFrame, smap: SuperclassMap | None) -> pd.DataFrame:
    if smap is None:
        table["true_superclass"] = table["wrong_superclass"] = table["confusion"] = None
        return table
    names = np.asarray(smap.names, dtype=object)
    true_super = smap.of(table["label"].to_numpy())
    wrong_super = smap.of(table["wrong_pred"].to_numpy())
    table["true_superclass"] = names[true_super]
    table["wrong_superclass"] = names[wrong_super]
    # A pooled reject group is no real superclass: confusions inside it are not "siblings".
    real = np.ones(len(table), bool) if smap.reject is None else names[true_super] != smap.reject
    table["confusion"] = np.where(
        real, np.where(true_super == wrong_super, WITHIN, OUTSIDE), None
    ).astype(object)
    return table


def disagreement_summary(
    table: pd.DataFrame, *, n_boot: int = N_BOOT, **labels: Any
) -> pd.DataFrame:
    """Counts per direction × confusion of a :func:`find_disagreements` table.

    Columns ``direction, confusion, n, share`` (share within the direction) and
    ``share_ci_low``, ``share_ci_high`` (bootstrap over the cases, ``n_boot`` resamples);
    ``labels`` become constant columns (e.g. ``model="MRL"``).
    """
    needed = {"direction", "confusion", "small_dim", "large_dim"}
    if not needed <= set(table.columns):
        raise ValueError(f"not a find_disagreements table: it lacks {sorted(needed - set(table))}")
    confusion = table["confusion"].fillna("unlabelled")
    counts = (
        table.assign(confusion=confusion)
        .groupby(["small_dim", "large_dim", "direction", "confusion"], sort=True)
        .size()
        .rename("n")
        .reset_index()
    )
    counts["share"] = counts["n"] / counts.groupby("direction")["n"].transform("sum")
    if len(counts):
        # Per row: the cases of its direction and confusion, over the cases of its direction.
        direction = table["direction"].to_numpy()
        of_direction = direction[None, :] == counts["direction"].to_numpy()[:, None]
        same = confusion.to_numpy()[None, :] == counts["confusion"].to_numpy()[:, None]
        low, high = bootstrap_ratios(of_direction & same, of_direction, n_boot).interval()
        counts["share_ci_low"], counts["share_ci_high"] = low, high
    for key, value in labels.items():
        counts.insert(0, key, value)
    return counts


def case_labels(table: pd.DataFrame) -> list[str]:
    """One short label per :func:`find_disagreements` row (for figure rows)."""
    names = table["label_name"] if "label_name" in table else table["label"].astype(str)
    confusion = table["confusion"].map(lambda c: f", {c}" if isinstance(c, str) else "")
    return [
        f"#{i} {name}<br>{d}{c}"
        for i, name, d, c in zip(
            table["sample_index"], names, table["direction"], confusion, strict=True
        )
    ]


def pairwise_disagreement(
    logits: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    n_boot: int = N_BOOT,
    **labels_: Any,
) -> pd.DataFrame:
    """For every pair of sizes ``small < large``: how many samples are fixed and broken.

    One row per pair: ``small_dim, large_dim, n_fixed, n_broken, n_samples`` and the
    shares of the eval set ``fixed_share``, ``broken_share``, each with its bootstrap
    interval over the samples (``<share>_ci_low``, ``<share>_ci_high``; ``n_boot``
    resamples shared by all pairs); ``labels_`` become constant columns.
    """
    scores, labels, sizes = check_scores(logits, labels, nesting, name="logits")
    correct = predictions(scores) == labels[None, :]  # [G, N]
    as_int = correct.astype(np.int64)
    fixed = (1 - as_int) @ as_int.T  # [a, b]: wrong at a, right at b
    lo, hi = np.triu_indices(len(sizes), k=1)
    # Per sample and pair: fixed (wrong small, right large) and broken (the reverse).
    outcomes = np.concatenate([~correct[lo] & correct[hi], correct[lo] & ~correct[hi]])
    low, high = bootstrap_means(outcomes, n_boot).interval()
    k = len(lo)
    table = pd.DataFrame(
        {
            "small_dim": np.asarray(sizes)[lo],
            "large_dim": np.asarray(sizes)[hi],
            "n_fixed": fixed[lo, hi],
            "n_broken": fixed[hi, lo],
            "n_samples": correct.shape[1],
            "fixed_share": fixed[lo, hi] / correct.shape[1],
            "fixed_share_ci_low": low[:k],
            "fixed_share_ci_high": high[:k],
            "broken_share": fixed[hi, lo] / correct.shape[1],
            "broken_share_ci_low": low[k:],
            "broken_share_ci_high": high[k:],
        }
    )
    for key, value in labels_.items():
        table.insert(0, key, value)
    return table
