"""The per-dimension accuracy study (paper Figures 2-3, 5): tables from caches.

The only module of the theme that reads caches: it combines the array-level functions of
:mod:`mrl_analysis.accuracy.metrics` and :mod:`mrl_analysis.accuracy.baselines` over a set
of named models' caches, so that notebook 01 stays a narration of a few calls. Accuracies
are fractions; :func:`mrl_analysis.accuracy.headlines.size_headlines` states the notebook's
numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mrl_analysis.accuracy.baselines import BASELINE_METHODS, baseline_knn_accuracy
from mrl_analysis.accuracy.metrics import (
    interpolation_sizes,
    knn_accuracy,
    linear_accuracy,
    mrl_e_interpolated_accuracy,
)
from mrl_analysis.cache.reader import EmbeddingCache


def linear_table(
    caches: Mapping[str, EmbeddingCache],
    *,
    topk: Sequence[int] = (1, 5),
    interpolation_steps: int = 1,
) -> pd.DataFrame:
    """Linear-head top-k at every nesting size of every model; MRL-E also in between.

    ``interpolation_steps`` sizes are inserted between consecutive trained sizes of an
    MRL-E model (0 turns interpolation off).
    """
    tables = []
    for name, cache in caches.items():
        tables.append(
            linear_accuracy(cache.logits(), cache.labels, cache.nesting, topk=topk, model=name)
        )
        if cache.kind == "mrl-e" and interpolation_steps > 0:
            weight, bias = cache.head()
            sizes = interpolation_sizes(cache.nesting, interpolation_steps)
            tables.append(
                mrl_e_interpolated_accuracy(
                    cache.features(), weight, bias, cache.labels, sizes, topk=topk, model=name
                )
            )
    return pd.concat(tables, ignore_index=True)


def knn_table(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache],
    *,
    k: Sequence[int] = (1,),
    min_dim: int = 2,
    baseline_model: str | None = None,
    baseline_methods: Sequence[str] = BASELINE_METHODS,
    seed: int = 0,
) -> pd.DataFrame:
    """k-NN accuracy (faiss, L2-normalized after truncation) at every size of every model.

    The database is each model's ``database_caches`` entry (e.g. the train split). MRL and
    MRL-E use their nesting sizes from ``min_dim`` up (L2-normalized 1-d features keep
    only their sign); an FF-k model contributes its own size k. ``baseline_model`` names
    the (largest) FF model on which the paper's post-hoc baselines run: first-m features
    ("Rand. FS"), SVD to m and a random JL projection to m, at the MRL sizes.
    """
    tables = []
    mrl_sizes: set[int] = set()
    for name, query in eval_caches.items():
        db = database_caches[name]
        sizes = [m for m in query.nesting if m >= min_dim]
        if query.kind == "mrl" or query.kind == "mrl-e":
            mrl_sizes.update(sizes)
        tables.append(
            knn_accuracy(
                db.features(), db.labels, query.features(), query.labels, sizes, k=k, model=name
            )
        )
    if baseline_model is not None:
        query, db = eval_caches[baseline_model], database_caches[baseline_model]
        full = query.nesting[-1]
        sizes = sorted(m for m in mrl_sizes or {full} if m <= full)
        tables.append(
            baseline_knn_accuracy(
                db.features(full),
                db.labels,
                query.features(full),
                query.labels,
                sizes,
                methods=baseline_methods,
                k=k,
                model=baseline_model,
                seed=seed,
            )
        )
    return pd.concat(tables, ignore_index=True)
