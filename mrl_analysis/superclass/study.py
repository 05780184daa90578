"""The superclass study (paper §5, Figures 10-12, Appendix J) on named caches: notebook 02.

The only module of the theme that reads caches. :func:`load_score_sets` turns checkpoints
into per-size logits (MRL / MRL-E one set each, FF-k models stacked into ``"FF"``),
:func:`superclass_map_for` resolves their superclasses through the library's one resolver,
and :func:`superclass_study` computes every table of the notebook and its headlines
(:mod:`mrl_analysis.superclass.headlines`) in one :class:`SuperclassStudy`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import build_caches
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.cache.scores import FF_NAME, ScoreSet, score_sets
from mrl_analysis.core.checks import check_fraction, check_scores, check_truncate_dim
from mrl_analysis.core.findings import finding, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.numeric import predictions
from mrl_analysis.core.stats import (
    LEVEL,
    N_BOOT,
    bootstrap_means,
    bootstrap_ratios,
)
from mrl_analysis.data.hierarchy import SuperclassMap, resolve_superclasses
from mrl_analysis.superclass.headlines import (
    outlier_headlines,
    paired_headlines,
    size_headlines,
    trend_headlines,
    within_superclass_headlines,
)
from mrl_analysis.superclass.metrics import (
    per_superclass_accuracy,
    superclass_accuracy,
    superclass_members,
)
from mrl_analysis.superclass.per_class import (
    at_sizes,
    classify_trends,
    per_class_accuracy,
    trend_counts,
)


def load_score_sets(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    split: str,
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    ff_name: str = FF_NAME,
) -> dict[str, ScoreSet]:
    """Per-size logits of every named checkpoint on ``split`` (cached on disk and reused):
    one :class:`ScoreSet` per MRL / MRL-E model, the FF-k models stacked under ``ff_name``."""
    caches = build_caches(models, dataset, [split], cache_root=cache_root, data_root=data_root)
    return score_sets({name: per_split[split] for name, per_split in caches.items()}, ff_name)


def overview(sets: Mapping[str, ScoreSet]) -> pd.DataFrame:
    """One row per score set: ``model, kind, sizes, from`` (the caches it was built from)."""
    return pd.DataFrame(
        [
            {"model": n, "kind": s.kind, "sizes": s.nesting, "from": ", ".join(s.sources)}
            for n, s in sets.items()
        ]
    )


def superclass_map_for(
    scores: ScoreSet | EmbeddingCache,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    *,
    wordnet_depth: int | None = None,
    wordnet_superclasses: Sequence[str] | None = None,
    superclasses: Sequence[str] | None = None,
    reject: str | None = "auto",
) -> SuperclassMap:
    """The :class:`SuperclassMap` of ``scores``' classes: the stored hierarchy by default,
    else ``hierarchy`` (a JSON file or dict, by class id or name), ``wordnet_depth`` or
    ``wordnet_superclasses``; see :func:`~mrl_analysis.data.hierarchy.resolve_superclasses`
    (``reject="auto"``: classes left out or pooled as ``"other"`` form the reject group)."""
    return resolve_superclasses(
        scores.class_ids,
        scores.class_names,
        scores.hierarchy,
        hierarchy=hierarchy,
        wordnet_depth=wordnet_depth,
        wordnet_superclasses=wordnet_superclasses,
        superclasses=superclasses,
        reject=reject,
    )


def superclass_tables(
    sets: Mapping[str, ScoreSet], smap: SuperclassMap
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`superclass_accuracy` and :func:`per_superclass_accuracy` of every set,
    concatenated (``model`` = the set's name)."""
    overall, per_super = [], []
    for name, s in sets.items():
        overall.append(superclass_accuracy(s.logits, s.labels, s.nesting, smap, model=name))
        per_super.append(per_superclass_accuracy(s.logits, s.labels, s.nesting, smap, model=name))
    return pd.concat(overall, ignore_index=True), pd.concat(per_super, ignore_index=True)


def per_class_tables(sets: Mapping[str, ScoreSet]) -> pd.DataFrame:
    """:func:`per_class_accuracy` of every set (relative to each set's largest size)."""
    return pd.concat(
        [
            per_class_accuracy(s.logits, s.labels, s.nesting, class_names=s.class_names, model=n)
            for n, s in sets.items()
        ],
        ignore_index=True,
    )


#: The parts of :attr:`SuperclassStudy.headlines`, in notebook order (the ``paired`` and
#: ``baseline_*`` ones only with a baseline).
SECTIONS = (
    "accuracy",
    "paired",
    "error_share",
    "within_superclass",
    "trends",
    "outliers",
    "baseline_outliers",
)


@dataclass(frozen=True)
class TrendRule:
    """How per-class curves are sorted into trends (see
    :func:`~mrl_analysis.superclass.per_class.classify_trends`): ``tolerance`` and ``dip`` in
    samples, or as floats below 1 shares of each class's samples."""

    tolerance: float = 0.005
    dip: float = 0.02


@dataclass(frozen=True)
class SuperclassStudy:
    """Every table of the superclass study for one ``model`` (and FF as ``baseline``).

    ``overall`` / ``per_class``: all models; ``per_superclass``, ``model_classes``: the
    model's rows; ``baseline_classes``: the baseline's per-class rows (None without FF);
    ``trends`` / ``trend_counts``: the model, the model at the baseline's sizes and the
    baseline; ``headlines``: every number the notebook states (column ``section`` names
    the part of the study).
    """

    model: str
    baseline: str | None
    members: pd.DataFrame
    overall: pd.DataFrame
    per_superclass: pd.DataFrame
    per_class: pd.DataFrame
    model_classes: pd.DataFrame
    baseline_classes: pd.DataFrame | None
    trends: pd.DataFrame
    trend_counts: pd.DataFrame
    headlines: pd.DataFrame

    def multi_class_superclasses(self) -> list[str]:
        """Superclasses of more than one class: a superclass of one class is trivially
        100% accurate within itself."""
        return self.members.loc[self.members["n_classes"] > 1, "superclass"].tolist()

    def say(self, section: str) -> None:
        """Print the sentences of one section of :attr:`headlines` (see :data:`SECTIONS`)."""
        if section not in SECTIONS:
            raise ValueError(f"unknown headline section {section!r}: use one of {SECTIONS}")
        texts = self.headlines.loc[self.headlines["section"] == section, "text"]
        if len(texts):
            print("\n".join(texts))


def superclass_study(
    sets: Mapping[str, ScoreSet],
    smap: SuperclassMap,
    *,
    model: str = "MRL",
    baseline: str = FF_NAME,
    tolerance: float = 0.01,
    trend: TrendRule = TrendRule(),
    n_outliers: int = 1,
) -> SuperclassStudy:
    """All tables and headlines of notebook 02 for ``model`` against ``baseline`` (FF; left
    out when the sets have none).

    ``tolerance`` (a fraction, 0.01 = one point): how close to its best an accuracy must be
    to count as saturated. Trends are classified on the model, on the model at the
    baseline's sizes (a like-for-like count) and on the baseline.
    """
    if model not in sets:
        raise ValueError(f"no score set named {model!r}; the sets are {list(sets)}")
    tolerance = check_fraction(tolerance, "tolerance")
    has_baseline = baseline in sets
    members = superclass_members(smap, sets[model].class_names)
    overall, per_super = superclass_tables(sets, smap)
    per_class = per_class_tables(sets)
    model_classes = per_class[per_class["model"] == model].reset_index(drop=True)
    parts = [model_classes]
    baseline_classes = None
    if has_baseline:
        baseline_classes = per_class[per_class["model"] == baseline].reset_index(drop=True)
        shared = [m for m in sets[baseline].nesting if m in sets[model].nesting]
        parts += [at_sizes(per_class, model, shared, f"{model} @ {baseline} sizes")]
        parts += [baseline_classes]
    trends = classify_trends(pd.concat(parts), tolerance=trend.tolerance, dip=trend.dip)
    counts = trend_counts(trends)
    model_super = per_super[per_super["model"] == model].reset_index(drop=True)
    accuracy = pd.concat(
        [
            size_headlines(overall, model, metric, tolerance)
            for metric in ("superclass_accuracy", "fine_accuracy")
        ],
        ignore_index=True,
    )
    sections = {
        # Where each accuracy stands and saturates; its extremes are the figure's to show.
        "accuracy": accuracy[~accuracy["headline"].isin(["lowest", "highest"])],
        "error_share": size_headlines(overall, model, "within_superclass_error_share"),
        "within_superclass": within_superclass_headlines(model_super, members),
        "trends": trend_headlines(counts),
        "outliers": outlier_headlines(model_classes, n_outliers),
    }
    if has_baseline:
        sections["paired"] = paired_headlines(overall, model, baseline)
        sections["baseline_outliers"] = outlier_headlines(baseline_classes, n_outliers)
    headlines = pd.concat(
        [sections[name].assign(section=name) for name in SECTIONS if name in sections],
        ignore_index=True,
    )
    return SuperclassStudy(
        model=model,
        baseline=baseline if has_baseline else None,
        members=members,
        overall=overall,
        per_superclass=model_super,
        per_class=per_class,
        model_classes=model_classes,
        baseline_classes=baseline_classes,
        trends=trends,
        trend_counts=counts,
        headlines=headlines,
    )


# --------------------------------------------------------------------------- findings

CLAIM_E = "Superclass accuracy falls less than fine accuracy at small sizes"
CLAIM_H = "Small-size errors concentrate within superclasses"


def findings(
    eval_caches: Mapping[str, EmbeddingCache],
    *,
    model: str = "MRL",
    truncate_dim: int | None = None,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    wordnet_depth: int | None = None,
    wordnet_superclasses: Sequence[str] | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> list[dict]:
    """Findings (e) and (h) of the paper on ``model``'s cache in ``eval_caches``
    (``{display name: EmbeddingCache}`` of one eval split), as
    :func:`~mrl_analysis.core.findings.finding` rows (keys ``"e"``, ``"h"``).

    Both compare the small size ``d = truncate_dim`` (default: ``model``'s smallest size)
    with the largest size ``L``, through the superclasses of :func:`superclass_map_for`
    (the cache's stored hierarchy unless ``hierarchy`` / ``wordnet_*`` is given; classes it
    leaves out pool into a reject group). Intervals: percentile bootstrap over the eval
    samples at ``level`` (``n_boot`` resamples, paired). Both are "cannot be measured"
    without an MRL / MRL-E cache named ``model`` of two sizes or more, or without a
    hierarchy.

    (e) Superclass accuracy falls less than fine accuracy at small sizes. Effect: the drop
    of fine top-1 from ``L`` to ``d`` minus the drop of superclass accuracy (the predicted
    class lies in the true superclass) from ``L`` to ``d``, ``(fine_L − fine_d) −
    (super_L − super_d)``, a fraction (paper Figure 10). Holds when the interval lies
    above 0.

    (h) Small-size errors concentrate within superclasses. Effect: among the samples wrong
    at ``d`` whose true class is in a real superclass (not the reject group), the share
    whose prediction lies in the true superclass, minus the share expected if the wrong
    prediction were any other class at random (``(n_S − 1) / (C − 1)`` for a class of a
    superclass of ``n_S`` classes, averaged over those errors), a fraction. Holds when the
    interval lies above 0.
    """
    effect_e = f"{model}: fine top-1 drop − superclass accuracy drop from the largest size"
    effect_h = f"{model}: within-superclass share of errors − chance share"
    cache = eval_caches.get(model)
    why = None
    if cache is None or cache.kind not in NESTED_KINDS or len(cache.nesting) < 2:
        why = f"no MRL / MRL-E model named {model!r} with two sizes or more here"
    elif not (cache.hierarchy or hierarchy or wordnet_depth or wordnet_superclasses):
        why = "the data stores no class hierarchy and none was given"
    if why is not None:
        return [unmeasured("e", CLAIM_E, effect_e, why), unmeasured("h", CLAIM_H, effect_h, why)]
    nesting = cache.nesting
    d = nesting[0] if truncate_dim is None else check_truncate_dim(truncate_dim, nesting)
    smap = superclass_map_for(
        cache, hierarchy, wordnet_depth=wordnet_depth, wordnet_superclasses=wordnet_superclasses
    )
    logits, labels, _ = check_scores(cache.logits(), cache.labels, nesting, "logits")
    preds = predictions(logits[[nesting.index(d), -1]])  # [2, N]: the small and the largest size
    fine = (preds == labels).astype(float)
    true_super = smap.of(labels)
    same = (smap.of(preds) == true_super).astype(float)
    at = f" at d = {d} vs {nesting[-1]} (fraction)"
    boot = bootstrap_means((fine[1] - fine[0]) - (same[1] - same[0]), n_boot, level=level)
    (low,), (high,) = boot.interval()
    row_e = finding("e", CLAIM_E, effect_e + at, float(boot.mean[0]), low, high)
    return [
        row_e,
        _error_finding(smap, labels, preds[0], true_super, same[0], d, effect_h, n_boot, level),
    ]


def _error_finding(
    smap: SuperclassMap,
    labels: np.ndarray,
    preds: np.ndarray,
    true_super: np.ndarray,
    same: np.ndarray,
    d: int,
    effect: str,
    n_boot: int,
    level: float,
) -> dict:
    real = np.ones(len(labels), bool) if smap.reject is None else true_super != len(smap.names) - 1
    errors = ((preds != labels) & real).astype(float)
    n = int(errors.sum())
    if n == 0:
        why = f"no errors at d = {d} in a real superclass: nothing to locate"
        return unmeasured("h", CLAIM_H, f"{effect} at d = {d} (fraction)", why)
    num_classes = smap.index.shape[0]
    class_count = np.bincount(smap.index, minlength=len(smap.names))[true_super]
    chance = (class_count - 1) / max(num_classes - 1, 1)
    boot = bootstrap_ratios(errors * (same - chance), errors, n_boot, level=level)
    (low,), (high,) = boot.interval()
    effect = f"{effect} at d = {d}, over its {n} errors (fraction)"
    return finding("h", CLAIM_H, effect, float(boot.mean[0]), low, high)
