"""The routing studies (issue 5) on named caches: notebook 03 in a few calls.

The analyses in :mod:`~mrl_analysis.routing.oracle`,
:mod:`~mrl_analysis.routing.cascade` and :mod:`~mrl_analysis.routing.router` take arrays
``[G, N, C]``. This module turns a set of named :class:`EmbeddingCache`
objects (one eval split) into such arrays and runs those analyses over every model:

* :func:`score_sets`: one :class:`ScoreSet` per MRL / MRL-E model, and the FF-k models
  stacked into a single ``[G, N, C]`` set named ``"FF"`` (each contributes its one size),
  so that "MRL vs FF at the same sizes" is the same call for both;
* :func:`eval_score_sets`: the score sets of named checkpoints on every eval split (and
  on flipped inputs), from their caches;
* table builders over all sets (:func:`oracle_tables`, :func:`accuracy_tables`,
  :func:`cascade_studies`, :func:`score_set_router`);
* the notebook's two analyses in one call each: :func:`cascade_analysis` (Table 3,
  Figure 6 and the cost views) and :func:`router_analysis` (router vs cascade vs oracle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import HFLIP_SUFFIX, build_caches
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.cache.scores import FF_NAME, ScoreSet, score_sets
from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.findings import finding, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import LEVEL, N_BOOT, percentile_interval
from mrl_analysis.routing.cascade import (
    CASCADE_SETTINGS,
    CascadeStudy,
    SplitSettings,
    best_cap,
    cascade_study,
    cascade_summary,
    lowest_thresholds,
)
from mrl_analysis.routing.oracle import (
    accuracy_by_size,
    correctness,
    first_correct_shares,
    oracle_bootstrap,
    oracle_summary,
)
from mrl_analysis.routing.router import ROUTER_SETTINGS, RouterStudy, router_study
from mrl_analysis.routing.tradeoff import size_reduction, size_reductions, tradeoff_points

#: Appended to a cascade's name when it averages plain and flipped-input probabilities.
TTA_SUFFIX = " + flip TTA"


def accuracy_tables(sets: Mapping[str, ScoreSet]) -> pd.DataFrame:
    """Top-1 accuracy per size of every set: ``model, truncate_dim, accuracy``."""
    return pd.concat(
        [accuracy_by_size(s.logits, s.labels, s.nesting, model=n) for n, s in sets.items()],
        ignore_index=True,
    )


def flipped_split(split: str) -> str:
    """The name of ``split``'s flipped-input eval set (``"test"`` -> ``"test-hflip"``)."""
    return f"{split}-{HFLIP_SUFFIX}"


def cascade_name(model: str, tta: bool = False) -> str:
    """The name :func:`cascade_studies` gives ``model``'s cascade (with flip TTA or not)."""
    return f"{model}-AC{TTA_SUFFIX if tta else ''}"


def eval_score_sets(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    eval_splits: Sequence[str],
    *,
    tta: bool = False,
    ff_name: str = FF_NAME,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, dict[str, ScoreSet]]:
    """``{eval set: score_sets(...)}`` of the named checkpoints on every split in
    ``eval_splits``, from their caches (built or refreshed when needed).

    With ``tta`` the first split is also embedded with horizontally flipped inputs, under
    :func:`flipped_split` of it: the paper's test-time augmentation for cascades, and one
    more eval set for the oracle table.
    """
    splits = list(eval_splits)
    if not splits:
        raise ValueError("eval_splits is empty: give at least one split, e.g. ['test']")
    where = {"cache_root": cache_root, "data_root": data_root, "progress": progress}
    # The flipped inputs come from the same pass over the data as the plain ones.
    flips = splits[:1] if tta else []
    caches = build_caches(models, dataset, splits, hflip_splits=flips, **where)
    splits += [flipped_split(split) for split in flips]
    return {
        split: score_sets({name: per_split[split] for name, per_split in caches.items()}, ff_name)
        for split in splits
    }


def score_set_overview(sets_by_eval: Mapping[str, Mapping[str, ScoreSet]]) -> pd.DataFrame:
    """One row per eval set × score set: ``eval_set, model, kind, sizes, samples``."""
    return pd.DataFrame(
        [
            {
                "eval_set": e,
                "model": n,
                "kind": s.kind,
                "sizes": s.nesting,
                "samples": len(s.labels),
            }
            for e, sets in sets_by_eval.items()
            for n, s in sets.items()
        ]
    )


def oracle_tables(
    sets_by_eval: Mapping[str, Mapping[str, ScoreSet]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oracle summary and first-correct shares of every set on every eval set.

    ``sets_by_eval``: ``{eval set name: score_sets(...)}``. Returns
    (:func:`oracle_summary` rows, :func:`first_correct_shares` rows), concatenated.
    """
    summaries, shares = [], []
    for eval_set, sets in sets_by_eval.items():
        for name, s in sets.items():
            preds = s.predictions()  # shared by both tables: the argmax runs once
            summaries.append(
                oracle_summary(preds, s.labels, s.nesting, model=name, eval_set=eval_set)
            )
            shares.append(
                first_correct_shares(preds, s.labels, s.nesting, model=name, eval_set=eval_set)
            )
    return pd.concat(summaries, ignore_index=True), pd.concat(shares, ignore_index=True)


def cascade_studies(
    sets: Mapping[str, ScoreSet],
    tta_sets: Mapping[str, ScoreSet] | None = None,
    settings: SplitSettings = CASCADE_SETTINGS,
    *,
    tta_suffix: str = TTA_SUFFIX,
) -> dict[str, CascadeStudy]:
    """:func:`cascade_study` of every MRL / MRL-E set, named ``"<model>-AC"``.

    With ``tta_sets`` (the same models on flipped inputs) each model also gets a
    ``"<model>-AC<tta_suffix>"`` study on the averaged probabilities. All studies use the
    same random splits (one ``settings``).
    """
    nested = {n: s for n, s in sets.items() if s.kind in NESTED_KINDS}
    if not nested:
        raise ValueError("no MRL or MRL-E model among the sets: cascades need nested sizes")
    studies = {}
    for name, s in nested.items():
        probs = s.probabilities()
        variants: dict[str, np.ndarray | None] = {f"{name}-AC": None}
        if tta_sets is not None:
            if name not in tta_sets:
                raise ValueError(f"tta_sets has no {name!r}: build the flipped caches for it")
            variants[f"{name}-AC{tta_suffix}"] = tta_sets[name].probabilities()
        for label, tta in variants.items():
            studies[label] = cascade_study(
                probs,
                s.labels,
                s.nesting,
                tta_probabilities=tta,
                settings=settings,
                kind=s.kind,
                model=label,
            )
    return studies


def score_set_router(
    scores: ScoreSet,
    tta: ScoreSet | None = None,
    settings: SplitSettings = ROUTER_SETTINGS,
    *,
    input_sizes: Sequence[int] | None = None,
    model: str = "router",
) -> RouterStudy:
    """:func:`~mrl_analysis.routing.router.router_study` of one MRL / MRL-E score set
    (``tta``: the same model on flipped inputs, averaged in as for the cascades)."""
    if scores.kind not in NESTED_KINDS:
        raise ValueError(f"{scores.name!r} is an FF set: the router needs nested sizes")
    return router_study(
        scores.probabilities(),
        scores.labels,
        scores.nesting,
        input_sizes=input_sizes,
        tta_probabilities=None if tta is None else tta.probabilities(),
        settings=settings,
        model=model,
    )


def model_oracle(oracle: pd.DataFrame, model: str, eval_set: str) -> pd.DataFrame:
    """The :func:`oracle_tables` summary row of ``model`` on ``eval_set`` (a one-row table)."""
    row = oracle[(oracle["eval_set"] == eval_set) & (oracle["model"] == model)]
    if len(row) != 1:
        raise ValueError(f"the oracle table has no single row for {model!r} on {eval_set!r}")
    return row


@dataclass(frozen=True)
class CascadeAnalysis:
    """Cascades of every MRL / MRL-E model and the planes notebook 03 draws.

    ``curve``: the main cascade (``model``'s, with flip TTA when used); ``cascades``: the
    model's cascades (plain, then TTA); ``summary`` / ``best`` / ``stalled``:
    :func:`~mrl_analysis.routing.cascade.cascade_summary`, ``best_cap`` and
    ``lowest_thresholds``; ``points``: Figure 6's plane (the model's cascades, the model's
    and the FF single sizes, the model's oracle); ``cost_points``: every cascade and every
    single size (no oracle), for the head-compute view; ``reductions``: the model's
    cascades against FF (:func:`~mrl_analysis.routing.tradeoff.size_reductions`; None
    without FF models).
    """

    studies: dict[str, CascadeStudy]
    curve: str
    cascades: list[str]
    summary: pd.DataFrame
    best: pd.DataFrame
    stalled: pd.DataFrame
    single: pd.DataFrame
    points: pd.DataFrame
    cost_points: pd.DataFrame
    reductions: pd.DataFrame | None


def cascade_analysis(
    sets: Mapping[str, ScoreSet],
    tta_sets: Mapping[str, ScoreSet] | None,
    oracle: pd.DataFrame,
    settings: SplitSettings = CASCADE_SETTINGS,
    *,
    model: str,
    eval_set: str,
    ff_name: str = FF_NAME,
    tolerance: float = 0.0,
) -> CascadeAnalysis:
    """:func:`cascade_studies` of ``sets`` (one eval set, ``eval_set``; ``tta_sets``: the
    same on flipped inputs, or None) and the tables built from them; ``oracle``: the
    :func:`oracle_tables` summary; ``tolerance``: a fraction (0.001 = 0.1 points)."""
    if model not in sets:
        raise ValueError(f"no model {model!r} among the sets {list(sets)}")
    studies = cascade_studies(sets, tta_sets, settings)
    curve = cascade_name(model, tta_sets is not None)
    cascades = list(dict.fromkeys([cascade_name(model), curve]))
    summary = cascade_summary(studies)
    single = accuracy_tables(sets)
    num_classes = sets[model].num_classes
    points = tradeoff_points(
        studies={name: studies[name] for name in cascades},
        single_sizes=single[single["model"].isin([model, ff_name])],
        oracle=model_oracle(oracle, model, eval_set),
        num_classes=num_classes,
    )
    reductions = None
    if ff_name in sets:
        reductions = size_reductions(points, [curve, *cascades], ff_name, tolerance)
    return CascadeAnalysis(
        studies=studies,
        curve=curve,
        cascades=cascades,
        summary=summary,
        best=best_cap(summary),
        stalled=lowest_thresholds(studies),
        single=single,
        points=points,
        cost_points=tradeoff_points(studies=studies, single_sizes=single, num_classes=num_classes),
        reductions=reductions,
    )


@dataclass(frozen=True)
class RouterAnalysis:
    """The learned router against the main cascade and the oracle.

    ``points``: the plane (the cascade, the model's single sizes, its oracle, the router);
    ``match``: :func:`~mrl_analysis.routing.tradeoff.size_reduction` with the router as
    the curve and the cascade as the baseline; ``oracle`` / ``cascade_best``: the model's
    oracle row and the cascade's best cap row.
    """

    router: RouterStudy
    points: pd.DataFrame
    match: pd.DataFrame
    oracle: pd.Series
    cascade_best: pd.Series


def router_analysis(
    sets: Mapping[str, ScoreSet],
    tta_sets: Mapping[str, ScoreSet] | None,
    cascades: CascadeAnalysis,
    oracle: pd.DataFrame,
    settings: SplitSettings = ROUTER_SETTINGS,
    *,
    model: str,
    eval_set: str,
    input_sizes: Sequence[int] | None = None,
    tolerance: float = 0.0,
) -> RouterAnalysis:
    """:func:`score_set_router` of ``model`` (with flip TTA when ``tta_sets`` is given, like
    the cascade) and its comparison with ``cascades.curve`` and the oracle."""
    router = score_set_router(
        sets[model],
        None if tta_sets is None else tta_sets[model],
        settings,
        input_sizes=input_sizes,
    )
    model_row = model_oracle(oracle, model, eval_set)
    single = cascades.single
    points = tradeoff_points(
        studies={cascades.curve: cascades.studies[cascades.curve]},
        single_sizes=single[single["model"] == model],
        oracle=model_row,
        routers=[router],
        num_classes=sets[model].num_classes,
    )
    best = cascades.best
    return RouterAnalysis(
        router=router,
        points=points,
        match=size_reduction(points, router.model, cascades.curve, tolerance),
        oracle=model_row.iloc[0],
        cascade_best=best[best["model"] == cascades.curve].iloc[0],
    )


# --------------------------------------------------------------------------- findings

CLAIM_C = "The oracle beats the best single size"
CLAIM_D = "A cascade reaches the largest size's accuracy at a fraction of its expected size"
#: The findings' cascade study: 10 of the cascade's random splits (cheap, same seed).
FINDINGS_SETTINGS = CASCADE_SETTINGS.first(10)


def findings(
    eval_caches: Mapping[str, EmbeddingCache],
    *,
    model: str = "MRL",
    settings: SplitSettings = FINDINGS_SETTINGS,
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> list[dict]:
    """Findings (c) and (d) of the paper on ``model``'s cache in ``eval_caches`` (``{display
    name: EmbeddingCache}`` of one eval split), as
    :func:`~mrl_analysis.core.findings.finding` rows (keys ``"c"``, ``"d"``). Both are
    "cannot be measured" without an MRL / MRL-E cache named ``model`` of two sizes or more.

    (c) The oracle beats the best single size. Effect: the oracle's top-1 accuracy (a
    sample counts when any size of ``model`` gets it right) minus the accuracy of the best
    single size (a fraction; paper Tables 22-23). Interval: percentile bootstrap over the
    eval samples at ``level`` (``n_boot`` resamples), the best size re-chosen in every
    resample (:func:`~mrl_analysis.routing.oracle.oracle_bootstrap`). Holds when the
    interval lies above 0.

    (d) A cascade reaches the largest size's accuracy at a fraction of its size. Effect:
    the expected size the threshold cascade needs to be as accurate as ``model``'s largest
    size (within ``tolerance``, a fraction; one point by default, the workbench's usual "as
    accurate" slack, as in (g) and the diagnostic: with none, a cascade must beat sampling
    noise between held-out splits), as a fraction of that largest size. Per random
    split of ``settings`` (thresholds learned on its held-out samples, no flip TTA;
    :func:`~mrl_analysis.routing.cascade.cascade_study`): the smallest expected size among
    the caps whose accuracy on the split's evaluation samples is at least the largest
    size's accuracy on the same samples minus ``tolerance``, divided by the largest size;
    1 when no cap gets there (the largest size alone always does). Value: the mean over
    splits; interval: the percentile interval of the splits' values at ``level``. Holds
    when the interval lies below 1.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    effect_c = f"{model} oracle − best single size top-1 (fraction)"
    effect_d = (
        f"{model} cascade's expected size to match its largest size (within "
        f"{100 * tolerance:g} pt) / largest size"
    )
    cache = eval_caches.get(model)
    if cache is None or cache.kind not in NESTED_KINDS or len(cache.nesting) < 2:
        why = f"no MRL / MRL-E model named {model!r} with two sizes or more here"
        return [unmeasured("c", CLAIM_C, effect_c, why), unmeasured("d", CLAIM_D, effect_d, why)]
    correct = correctness(cache.logits(), cache.labels, cache.nesting)
    boot = oracle_bootstrap(correct, n_boot, level=level)
    gap = float(correct.any(axis=0).mean() - correct.mean(axis=1).max())
    row_c = finding("c", CLAIM_C, effect_c, gap, *boot.interval("gap"))
    row_d = _cascade_finding(cache, correct[-1], model, effect_d, settings, tolerance, level)
    return [row_c, row_d]


def _cascade_finding(
    cache: EmbeddingCache,
    largest: np.ndarray,
    model: str,
    effect: str,
    settings: SplitSettings,
    tolerance: float,
    level: float,
) -> dict:
    nesting = cache.nesting
    study = cascade_study(
        cache.probabilities(),
        cache.labels,
        nesting,
        settings=settings,
        kind=cache.kind,
        model=model,
    )
    _, evaluate = settings.splits(cache.num_samples)
    reference = largest[evaluate].mean(axis=1)  # [S]: the largest size on each split
    r = study.results
    reached = r["accuracy"].to_numpy() >= reference[r["split"].to_numpy()] - tolerance
    size = np.where(reached, r["expected_size"].to_numpy(), float(nesting[-1]))
    fraction = pd.Series(size).groupby(r["split"].to_numpy()).min().to_numpy() / nesting[-1]
    low, high = percentile_interval(fraction, level)
    effect = f"{effect} (mean over {len(fraction)} splits)"
    return finding(
        "d",
        CLAIM_D,
        effect,
        float(fraction.mean()),
        float(low),
        float(high),
        threshold=1.0,
        direction="below",
    )
