"""The routing studies (issue 5) on named caches: notebooks 02 and 03 in a few calls.

The analyses in :mod:`~mrl_analysis.superclass.metrics`, :mod:`~mrl_analysis.superclass.per_class`,
:mod:`~mrl_analysis.routing.oracle`, :mod:`~mrl_analysis.routing.cascade` and :mod:`~mrl_analysis.routing.router`
take arrays ``[G, N, C]``. This module turns a set of named :class:`EmbeddingCache`
objects (one eval split) into such arrays and runs those analyses over every model:

* :func:`score_sets`: one :class:`ScoreSet` per MRL / MRL-E model, and the FF-k models
  stacked into a single ``[G, N, C]`` set named ``"FF"`` (each contributes its one size),
  so that "MRL vs FF at the same sizes" is the same call for both;
* :func:`superclass_map_for`: the superclass hierarchy from the cache, a user JSON file
  or a WordNet depth;
* table builders over all sets (:func:`superclass_tables`, :func:`per_class_tables`,
  :func:`oracle_tables`, :func:`accuracy_tables`, :func:`cascade_studies`) and the
  points of the accuracy-vs-cost plane (:func:`tradeoff_points`);
* figure touches the notebooks need: :func:`per_class_heatmap` and :func:`zoom_tradeoff`
  for the accuracy-vs-size plane.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.cache.scores import ScoreSet
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.data import wordnet
from mrl_analysis.data.hierarchy import SuperclassMap, load_hierarchy
from mrl_analysis.routing.cascade import (
    DEFAULT_GRID,
    CascadeStudy,
    cascade_study,
    oracle_points,
    single_size_points,
)
from mrl_analysis.routing.oracle import (
    accuracy_by_size,
    first_correct_shares,
    oracle_summary,
)
from mrl_analysis.routing.router import RouterStudy
from mrl_analysis.superclass.metrics import (
    per_superclass_accuracy,
    superclass_accuracy,
)
from mrl_analysis.superclass.per_class import per_class_accuracy

#: Appended to a cascade's name when it averages plain and flipped-input probabilities.
TTA_SUFFIX = " + flip TTA"


def superclass_map_for(
    scores: ScoreSet | EmbeddingCache,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    *,
    wordnet_depth: int | None = None,
    wordnet_superclasses: Sequence[str] | None = None,
    superclasses: Sequence[str] | None = None,
    reject: str | None = None,
) -> SuperclassMap:
    """The :class:`SuperclassMap` of ``scores``' classes from one source of superclasses.

    * default: the hierarchy stored in the cache (the dataset's built-in one, e.g.
      Fashion-MNIST's tops / bottoms / dresses / footwear / bags);
    * ``hierarchy``: a JSON file or dict mapping class ids *or* class names to superclasses;
    * ``wordnet_depth``: the WordNet ancestor that many edges below the root (classes must
      be WordNet ids, as on ImageNet-derived data);
    * ``wordnet_superclasses``: chosen WordNet synsets (ids such as ``"n01503061"``, bird):
      each class goes to the first listed synset it descends from, the others to ``reject``
      (required when some class descends from none).

    ``superclasses`` and ``reject`` are passed to :meth:`SuperclassMap.from_hierarchy`
    (on ImageNet, ``reject="other"`` gives the paper's 31-way setup).
    """
    ids, names = list(scores.class_ids), list(scores.class_names)
    given = [
        name
        for name, value in {
            "hierarchy": hierarchy,
            "wordnet_depth": wordnet_depth,
            "wordnet_superclasses": wordnet_superclasses,
        }.items()
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one source of superclasses, not {' and '.join(given)}")
    if wordnet_depth is not None or wordnet_superclasses is not None:
        wn = wordnet.load_wordnet()
        unknown = [c for c in ids if c not in wn]
        if unknown:
            raise ValueError(
                f"{given[0]} needs WordNet ids as class ids, but {len(unknown)} are not "
                f"(e.g. {unknown[:3]}); pass hierarchy='<file>.json' instead"
            )
        tree: Mapping[str, str] = (
            wn.superclass_map(ids, depth=wordnet_depth)
            if wordnet_depth is not None
            else wn.superclass_map(ids, superclasses=wordnet_superclasses, reject=reject)
        )
    elif hierarchy is not None:
        given = (
            load_hierarchy(hierarchy) if isinstance(hierarchy, (str, os.PathLike)) else hierarchy
        )
        by_id = {c: given.get(c, given.get(n)) for c, n in zip(ids, names, strict=True)}
        tree = {c: p for c, p in by_id.items() if p is not None}
        if not tree:
            raise ValueError(
                "the hierarchy names none of the classes by id or name; its keys look like "
                f"{list(given)[:3]}, the classes like {ids[:3]}"
            )
    else:
        if scores.hierarchy is None:
            raise ValueError(
                "the cache stores no class hierarchy for this dataset: pass hierarchy= "
                "(a JSON file class -> superclass) or wordnet_depth= (ImageNet-like data)"
            )
        tree = scores.hierarchy
    return SuperclassMap.from_hierarchy(tree, ids, superclasses=superclasses, reject=reject)


def superclass_members(smap: SuperclassMap, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per superclass: ``superclass, n_classes, classes`` (names, comma-joined)."""
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame(
        {
            "superclass": smap.names,
            "n_classes": [int((smap.index == i).sum()) for i in range(len(smap.names))],
            "classes": [", ".join(names[smap.index == i]) for i in range(len(smap.names))],
        }
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


def accuracy_tables(sets: Mapping[str, ScoreSet]) -> pd.DataFrame:
    """Top-1 accuracy per size of every set: ``model, truncate_dim, accuracy``."""
    return pd.concat(
        [accuracy_by_size(s.logits, s.labels, s.nesting, model=n) for n, s in sets.items()],
        ignore_index=True,
    )


def at_sizes(table: pd.DataFrame, model: str, sizes: Sequence[int], label: str) -> pd.DataFrame:
    """The rows of ``model`` at ``sizes`` only, renamed ``label`` (e.g. MRL at the FF sizes,
    for trends over the same size grid)."""
    part = table[(table["model"] == model) & table["truncate_dim"].isin(list(sizes))]
    missing = sorted(set(int(m) for m in sizes) - set(part["truncate_dim"].astype(int)))
    if missing:
        raise ValueError(f"{model!r} has no rows at sizes {missing}")
    return part.assign(model=label).reset_index(drop=True)


def paired_by_size(table: pd.DataFrame, metric: str, model: str, baseline: str) -> pd.DataFrame:
    """``metric`` of ``model`` and ``baseline`` at the sizes both have, with the difference.

    Columns: ``truncate_dim, <model>, <baseline>, difference`` (model − baseline).
    """
    known = set(table["model"])
    for who in (model, baseline):
        if who not in known:
            raise ValueError(f"no rows for model {who!r}; the table has {sorted(known)}")
    wide = table[table["model"].isin([model, baseline])].pivot_table(
        index="truncate_dim", columns="model", values=metric
    )
    wide = wide.dropna()[[model, baseline]]
    wide.columns.name = None
    return wide.assign(difference=wide[model] - wide[baseline]).reset_index()


def per_class_heatmap(table: pd.DataFrame, value: str = "accuracy") -> go.Figure:
    """Classes × sizes heatmap of ``value`` from :func:`per_class_accuracy` (one model)."""
    if table["model"].nunique() != 1:
        raise ValueError("per_class_heatmap draws one model: filter the table first")
    wide = table.pivot(index="class_name", columns="truncate_dim", values=value)
    wide = wide.loc[table.drop_duplicates("class_index").sort_values("class_index")["class_name"]]
    wide.columns = [str(m) for m in wide.columns]
    fig = px.imshow(
        wide,
        color_continuous_scale="Viridis",
        zmin=0 if value == "accuracy" else None,
        zmax=1 if value == "accuracy" else None,
        text_auto=".0%" if len(wide) <= 40 else False,
        aspect="auto",
        labels={"x": "representation size", "y": "class", "color": value.replace("_", " ")},
        title=f"Per-class {value.replace('_', ' ')} across sizes ({table['model'].iloc[0]})",
    )
    fig.update_layout(height=max(400, 28 * len(wide) + 150))
    return fig


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
    *,
    n_splits: int = 30,
    holdout: int | float = 0.2,
    grid: Sequence[float] | None = None,
    seed: int = 0,
    tta_suffix: str = TTA_SUFFIX,
) -> dict[str, CascadeStudy]:
    """:func:`cascade_study` of every MRL / MRL-E set, named ``"<model>-AC"``.

    With ``tta_sets`` (the same models on flipped inputs) each model also gets a
    ``"<model>-AC<tta_suffix>"`` study on the averaged probabilities. All studies use the
    same random splits (same ``seed``).
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
                n_splits=n_splits,
                holdout=holdout,
                grid=grid,
                kind=s.kind,
                seed=seed,
                model=label,
            )
    return studies


def lowest_thresholds(
    studies: Mapping[str, CascadeStudy], lowest: float = float(DEFAULT_GRID[0])
) -> pd.DataFrame:
    """Where the learned threshold is the grid's ``lowest`` value: moving up from that
    size never helped on that split's held-out samples (ties go to the smallest threshold),
    so on that split the cascade stops there. Columns ``model, truncate_dim, n_splits,
    share_of_splits``, one row per model × size where it happened."""
    rows = []
    for name, study in studies.items():
        th = study.thresholds
        n = th["split"].nunique()
        hits = th[np.isclose(th["threshold"], lowest)].groupby("truncate_dim").size()
        rows += [
            {"model": name, "truncate_dim": int(m), "n_splits": int(k), "share_of_splits": k / n}
            for m, k in hits.items()
        ]
    return pd.DataFrame(rows, columns=["model", "truncate_dim", "n_splits", "share_of_splits"])


def cascade_summary(studies: Mapping[str, CascadeStudy]) -> pd.DataFrame:
    """Every study's summary (mean ± std over splits per cap; paper Table 3), stacked."""
    return pd.concat([s.summary() for s in studies.values()], ignore_index=True)


def tradeoff_points(
    *,
    studies: Mapping[str, CascadeStudy] | None = None,
    single_sizes: pd.DataFrame | None = None,
    oracle: pd.DataFrame | None = None,
    routers: Sequence[RouterStudy] = (),
    num_classes: int,
) -> pd.DataFrame:
    """Points of the accuracy-vs-cost plane for :func:`~mrl_analysis.routing.cascade.tradeoff_figure`.

    ``studies``: cascades; ``single_sizes``: :func:`accuracy_tables` rows (one curve per
    model); ``oracle``: :func:`oracle_tables` summary rows (one star each); ``routers``:
    learned routers. Columns: ``method, label, accuracy(_std), expected_size(_std),
    expected_cumulative_size(_std), expected_head_macs(_std)``. Head multiply-adds: a
    cascade's own count; ``num_classes × size`` for a single size; ``num_classes ×
    cumulative size`` for a router (separate MRL heads); none for the oracle.
    """
    parts = []
    for study in (studies or {}).values():
        s = study.summary()
        p = study.points()
        parts.append(
            p.assign(
                expected_cumulative_size_std=s["expected_cumulative_size_std"].to_numpy(),
                expected_head_macs=s["expected_head_macs_mean"].to_numpy(),
                expected_head_macs_std=s["expected_head_macs_std"].to_numpy(),
            )
        )
    if single_sizes is not None:
        p = single_size_points(single_sizes)
        parts.append(p.assign(expected_head_macs=p["expected_size"] * num_classes))
    if oracle is not None:
        parts.append(oracle_points(oracle).assign(expected_head_macs=np.nan))
    for router in routers:
        p = router.points()
        s = router.summary()
        parts.append(
            p.assign(
                expected_cumulative_size_std=s["expected_cumulative_size_std"].to_numpy(),
                expected_head_macs=p["expected_cumulative_size"] * num_classes,
                expected_head_macs_std=s["expected_cumulative_size_std"].to_numpy() * num_classes,
            )
        )
    if not parts:
        raise ValueError("nothing to plot: give studies, single_sizes, oracle or routers")
    columns = [
        "method",
        "label",
        "accuracy",
        "accuracy_std",
        "expected_size",
        "expected_size_std",
        "expected_cumulative_size",
        "expected_cumulative_size_std",
        "expected_head_macs",
        "expected_head_macs_std",
    ]
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def best_cap(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cascade, the cap with the best mean accuracy (the smallest such cap on ties)."""
    ordered = summary.sort_values(["model", "max_size"])
    best = ordered.loc[ordered.groupby("model", sort=False)["accuracy_mean"].idxmax()]
    return best.reset_index(drop=True)


def zoom_tradeoff(
    fig: go.Figure,
    points: pd.DataFrame,
    focus: Sequence[str],
    *,
    x: str = "expected_size",
    margin: float = 0.01,
) -> go.Figure:
    """Zoom a :func:`~mrl_analysis.routing.cascade.tradeoff_figure` of ``points`` on the methods
    ``focus``: y from their lowest accuracy − ``margin`` to the highest accuracy of any
    point + ``margin``; the log x axis spans the points inside that y range, widened by a
    factor 1.3 each side. In place; returns ``fig``."""
    chosen = points[points["method"].isin(list(focus))]
    if chosen.empty:
        raise ValueError(f"no points for methods {list(focus)}; the table has {set(points.method)}")
    lo = float(chosen["accuracy"].min()) - margin
    hi = float(points["accuracy"].max()) + margin
    inside = points[(points["accuracy"] >= lo) & (points[x] > 0)][x].dropna()
    fig.update_yaxes(range=[lo, hi])
    if not inside.empty:
        fig.update_xaxes(range=np.log10([inside.min() / 1.3, inside.max() * 1.3]).tolist())
    return fig
