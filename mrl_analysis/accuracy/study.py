"""The per-dimension accuracy study (paper Figures 2-3, 5): tables from caches.

The only module of the theme that reads caches: it combines the array-level functions of
:mod:`mrl_analysis.accuracy.metrics` and :mod:`mrl_analysis.accuracy.baselines` over a set
of named models' caches, so that notebook 01 stays a narration of a few calls: each of
:func:`linear_study` and :func:`knn_study` gives the accuracy table with bootstrap
intervals, paired tests between adjacent sizes, the smallest size within a tolerance of
the largest (with its interval) and the sentences stating them (:class:`SizeStudy`).
:func:`findings` checks the paper's findings (a) and (b). Accuracies are fractions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.accuracy.baselines import BASELINE_METHODS, baseline_knn_outcomes
from mrl_analysis.accuracy.headlines import size_headlines, step_headlines
from mrl_analysis.accuracy.metrics import (
    Outcomes,
    interpolation_sizes,
    knn_outcomes,
    linear_outcomes,
    mrl_e_interpolated_outcomes,
)
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.core.checks import check_fraction, check_int
from mrl_analysis.core.findings import finding, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.stats import (
    LEVEL,
    N_BOOT,
    adjacent_tests,
    bootstrap_means,
    percentile_interval,
    smallest_within_interval,
)


def linear_outcomes_of(
    caches: Mapping[str, EmbeddingCache],
    *,
    topk: Sequence[int] = (1, 5),
    interpolation_steps: int = 1,
) -> list[Outcomes]:
    """Linear-head top-k correctness at every nesting size of every model; MRL-E also in
    between (``interpolation_steps`` sizes between consecutive trained sizes; 0: none)."""
    interpolation_steps = check_int(interpolation_steps, "interpolation_steps", low=0)
    out = []
    for name, cache in caches.items():
        out.append(
            linear_outcomes(cache.logits(), cache.labels, cache.nesting, topk=topk, model=name)
        )
        if cache.kind == "mrl-e" and interpolation_steps > 0:
            weight, bias = cache.head()
            sizes = interpolation_sizes(cache.nesting, interpolation_steps)
            out.append(
                mrl_e_interpolated_outcomes(
                    cache.features(), weight, bias, cache.labels, sizes, topk=topk, model=name
                )
            )
    return out


def knn_outcomes_of(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache],
    *,
    k: Sequence[int] = (1,),
    min_dim: int = 2,
    baseline_model: str | None = None,
    baseline_methods: Sequence[str] = BASELINE_METHODS,
    seed: int = 0,
    max_queries: int | None = None,
) -> list[Outcomes]:
    """k-NN correctness (faiss, L2-normalized after truncation) at every size of every model.

    The database is each model's ``database_caches`` entry (e.g. the train split). MRL and
    MRL-E use their nesting sizes from ``min_dim`` up (L2-normalized 1-d features keep
    only their sign); an FF-k model contributes its own size k. ``baseline_model`` names
    the (largest) FF model on which the paper's post-hoc baselines run: first-m features
    ("Rand. FS"), SVD to m and a random JL projection to m, at the MRL sizes.
    ``max_queries`` queries at most that many eval samples, the same ones (drawn with
    ``seed``) for every model, so that comparisons stay paired; the intervals widen to match.
    """
    min_dim = check_int(min_dim, "min_dim", low=1)
    if max_queries is not None:
        max_queries = check_int(max_queries, "max_queries", low=1)
    out = []
    mrl_sizes: set[int] = set()
    for name, query in eval_caches.items():
        if name not in database_caches:
            raise ValueError(f"no database cache for {name!r}: give one per eval cache")
        db = database_caches[name]
        sizes = [m for m in query.nesting if m >= min_dim] or query.nesting[-1:]
        if query.kind in NESTED_KINDS:
            mrl_sizes.update(sizes)
        rows = _query_sample(query.num_samples, max_queries, seed)
        features, labels = query.features()[rows], np.asarray(query.labels)[rows]
        out.append(knn_outcomes(db.features(), db.labels, features, labels, sizes, k=k, model=name))
    if baseline_model is not None:
        if baseline_model not in eval_caches or baseline_model not in database_caches:
            raise ValueError(f"baseline_model {baseline_model!r} is not among the caches")
        query, db = eval_caches[baseline_model], database_caches[baseline_model]
        full = query.nesting[-1]
        sizes = sorted(m for m in mrl_sizes or {full} if m <= full)
        rows = _query_sample(query.num_samples, max_queries, seed)
        out += baseline_knn_outcomes(
            db.features(full),
            db.labels,
            query.features(full)[rows],
            np.asarray(query.labels)[rows],
            sizes,
            methods=baseline_methods,
            k=k,
            model=baseline_model,
            seed=seed,
        )
    return out


def _query_sample(n: int, max_queries: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_queries`` of ``n`` samples (all when None or ≥ n)."""
    if max_queries is None or n <= max_queries:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))


def linear_table(
    caches: Mapping[str, EmbeddingCache],
    *,
    topk: Sequence[int] = (1, 5),
    interpolation_steps: int = 1,
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """The tidy table (with bootstrap intervals) of :func:`linear_outcomes_of`."""
    outcomes = linear_outcomes_of(caches, topk=topk, interpolation_steps=interpolation_steps)
    return pd.concat([o.table(n_boot) for o in outcomes], ignore_index=True)


def knn_table(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache],
    *,
    k: Sequence[int] = (1,),
    min_dim: int = 2,
    baseline_model: str | None = None,
    baseline_methods: Sequence[str] = BASELINE_METHODS,
    seed: int = 0,
    max_queries: int | None = None,
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """The tidy table (with bootstrap intervals) of :func:`knn_outcomes_of`."""
    outcomes = knn_outcomes_of(
        eval_caches,
        database_caches,
        k=k,
        min_dim=min_dim,
        baseline_model=baseline_model,
        baseline_methods=baseline_methods,
        seed=seed,
        max_queries=max_queries,
    )
    return pd.concat([o.table(n_boot) for o in outcomes], ignore_index=True)


@dataclass(frozen=True)
class SizeStudy:
    """Accuracy per size of several lines (models, baselines) on one eval set.

    ``table``: the tidy table with bootstrap intervals
    (:data:`~mrl_analysis.accuracy.metrics.COLUMNS`);
    ``tests``: exact McNemar tests between adjacent sizes of every line, on the same
    samples (:func:`~mrl_analysis.core.stats.adjacent_tests`; columns ``label, metric``
    and the test's); ``smallest``: per line × metric, the smallest size within
    ``tolerance`` of the line's largest size, with a bootstrap interval
    (:func:`~mrl_analysis.core.stats.smallest_within_interval`); ``headlines``: the
    sentences notebook 01 prints (:mod:`mrl_analysis.accuracy.headlines`).
    """

    table: pd.DataFrame
    tests: pd.DataFrame
    smallest: pd.DataFrame
    headlines: pd.DataFrame

    def wide(self, metric: str) -> pd.DataFrame:
        """``metric`` per size (rows) and label (columns) as ``"88.1% [87.4, 88.7]"``: the
        accuracy and its interval in percent, for reading (the tables hold fractions)."""
        rows = self.table[self.table["metric"] == metric]
        if rows.empty:
            raise ValueError(f"no rows with metric {metric!r}: use one of {set(self.table.metric)}")
        cells = rows.assign(
            cell=[
                f"{v:.1%} [{100 * lo:.1f}, {100 * hi:.1f}]"
                for v, lo, hi in zip(rows["value"], rows["ci_low"], rows["ci_high"], strict=True)
            ]
        )
        wide = cells.pivot(index="truncate_dim", columns="label", values="cell")
        wide.columns.name = None
        return wide[list(dict.fromkeys(rows["label"]))].fillna("")


def _lines(outcomes: Sequence[Outcomes]) -> dict[tuple[str, str], tuple[list[int], np.ndarray]]:
    """Per (legend label, metric): sizes ascending and correctness ``[G, N]``; the FF-k
    models of one label form one line."""
    parts: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
    for o in outcomes:
        for metric in o.metrics:
            rows = o.at(metric)
            parts.setdefault((o.label, metric), []).extend(zip(o.sizes, rows, strict=True))
    lines = {}
    for key, pairs in parts.items():
        pairs.sort(key=lambda pair: pair[0])
        sizes = [m for m, _ in pairs]
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"line {key[0]!r} has two results at one size: {sizes}")
        if len({row.shape for _, row in pairs}) != 1:
            raise ValueError(f"line {key[0]!r} mixes eval sets of different sizes")
        lines[key] = (sizes, np.stack([row for _, row in pairs]))
    return lines


def size_study(
    outcomes: Sequence[Outcomes], *, tolerance: float = 0.01, n_boot: int = N_BOOT
) -> SizeStudy:
    """:class:`SizeStudy` of ``outcomes`` (all on one eval set); ``tolerance`` a fraction
    (0.01 = one point)."""
    tolerance = check_fraction(tolerance, "tolerance")
    if not outcomes:
        raise ValueError("no outcomes: give at least one model's results")
    table = pd.concat([o.table(n_boot) for o in outcomes], ignore_index=True)
    tests, smallest = [], []
    for (label, metric), (sizes, correct) in _lines(outcomes).items():
        if len(sizes) > 1:
            tests.append(adjacent_tests(correct, sizes).assign(label=label, metric=metric))
        boot = bootstrap_means(correct, n_boot)
        row = smallest_within_interval(boot, sizes, tolerance)
        pick = sizes.index(row["smallest_dim"])
        smallest.append(
            {
                "label": label,
                "metric": metric,
                **row,
                "reference_value": float(boot.mean[-1]),
                "smallest_value": float(boot.mean[pick]),
                "tolerance": tolerance,
            }
        )
    first = ["label", "metric"]
    tests_table = (
        pd.concat(tests, ignore_index=True)
        if tests
        else pd.DataFrame(columns=[*first, "truncate_dim", "next_dim", "p_value"])
    )
    tests_table = tests_table[first + [c for c in tests_table.columns if c not in first]]
    smallest_table = pd.DataFrame(smallest)
    return SizeStudy(
        table=table,
        tests=tests_table,
        smallest=smallest_table,
        headlines=pd.concat(
            [size_headlines(smallest_table), step_headlines(tests_table)], ignore_index=True
        ),
    )


def linear_study(
    caches: Mapping[str, EmbeddingCache],
    *,
    topk: Sequence[int] = (1, 5),
    interpolation_steps: int = 1,
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
) -> SizeStudy:
    """:func:`size_study` of :func:`linear_outcomes_of` (notebook 01's linear part)."""
    outcomes = linear_outcomes_of(caches, topk=topk, interpolation_steps=interpolation_steps)
    return size_study(outcomes, tolerance=tolerance, n_boot=n_boot)


def knn_study(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache],
    *,
    k: Sequence[int] = (1,),
    min_dim: int = 2,
    baseline_model: str | None = None,
    baseline_methods: Sequence[str] = BASELINE_METHODS,
    seed: int = 0,
    max_queries: int | None = None,
    tolerance: float = 0.01,
    n_boot: int = N_BOOT,
) -> SizeStudy:
    """:func:`size_study` of :func:`knn_outcomes_of` (notebook 01's k-NN part)."""
    outcomes = knn_outcomes_of(
        eval_caches,
        database_caches,
        k=k,
        min_dim=min_dim,
        baseline_model=baseline_model,
        baseline_methods=baseline_methods,
        seed=seed,
        max_queries=max_queries,
    )
    return size_study(outcomes, tolerance=tolerance, n_boot=n_boot)


# --------------------------------------------------------------------------- findings

CLAIM_A = "MRL ≥ FF at small sizes (linear)"
CLAIM_B = "MRL 1-NN well above random-feature and SVD baselines at small sizes"


def _same_samples(a: EmbeddingCache, b: EmbeddingCache, names: tuple[str, str]) -> None:
    if a.num_samples != b.num_samples or not np.array_equal(a.labels, b.labels):
        raise ValueError(
            f"caches {names[0]!r} and {names[1]!r} hold different samples: give caches of "
            "the same split"
        )


def _ff_by_size(caches: Mapping[str, EmbeddingCache]) -> dict[int, str]:
    """FF-k caches by their size k."""
    return {c.nesting[-1]: name for name, c in caches.items() if c.kind == "ff"}


def _lowest(diffs: np.ndarray, n_boot: int, level: float) -> tuple[int, float, float, float]:
    """Row of ``diffs [K, N]`` with the lowest mean, that mean, and the interval of the
    minimum over rows (paired: every row resampled alike)."""
    boot = bootstrap_means(diffs, n_boot, level=level)
    low, high = percentile_interval(boot.replicates.min(axis=0), level)
    row = int(boot.mean.argmin())
    return row, float(boot.mean[row]), float(low), float(high)


def findings(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache] | None = None,
    *,
    model: str = "MRL",
    baseline_model: str | None = None,
    small_max: int = 64,
    min_dim: int = 2,
    margin: float = 0.0,
    max_queries: int = 5000,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> list[dict]:
    """Findings (a) and (b) of the paper on the models at hand, as
    :func:`~mrl_analysis.core.findings.finding` rows (keys ``"a"``, ``"b"``).

    ``eval_caches``: ``{display name: EmbeddingCache}`` of one eval split (``model`` and the
    FF-k models); ``database_caches``: the same names on the k-NN database split (e.g.
    train), needed by (b). "Small sizes" are sizes up to ``small_max``. Intervals are
    percentile bootstrap intervals at ``level`` over the eval samples (``n_boot``
    resamples), paired: every size and model is resampled alike, and the interval of a
    minimum is the minimum taken in every resample.

    (a) MRL ≥ FF at small sizes (linear). Effect: the minimum, over the FF-k models with
    ``k <= small_max`` and ``k`` a size of ``model``, of ``model``'s linear top-1 at
    ``d = k`` minus FF-k's top-1 (a fraction). Holds when the interval lies above 0.
    Not measurable without ``model`` (an MRL / MRL-E cache) or such an FF-k model.

    (b) MRL 1-NN well above random-feature and SVD baselines at small sizes. Effect: the
    minimum, over the sizes ``d`` of ``model`` with ``min_dim <= d <= small_max`` and over
    the two baselines, of ``model``'s 1-NN accuracy at ``d`` minus the baseline's 1-NN
    accuracy at ``d`` (a fraction). The baselines reduce ``baseline_model``'s features
    (default: the largest FF-k model) post hoc: its first ``d`` features ("Rand. FS") and
    its top-``d`` SVD directions fit on the database; k-NN as
    :func:`~mrl_analysis.accuracy.metrics.knn_outcomes` (L2-normalized, faiss). Holds when
    the interval lies above ``margin`` ("well above": pass e.g. 0.01 for one point). At
    most ``max_queries`` eval samples (drawn with ``seed``) are queried, to stay cheap.
    Not measurable without ``database_caches`` or an FF model.
    """
    small_max = check_int(small_max, "small_max", low=1)
    min_dim = check_int(min_dim, "min_dim", low=1)
    margin = check_fraction(margin, "margin")
    max_queries = check_int(max_queries, "max_queries", low=1)
    return [
        _linear_finding(eval_caches, model, small_max, n_boot, level),
        _knn_finding(
            eval_caches,
            database_caches,
            model,
            baseline_model,
            range(min_dim, small_max + 1),
            margin,
            max_queries,
            n_boot,
            level,
            seed,
        ),
    ]


def _linear_finding(
    caches: Mapping[str, EmbeddingCache], model: str, small_max: int, n_boot: int, level: float
) -> dict:
    effect = f"min over FF-k (k ≤ {small_max}) of {model} − FF-k linear top-1 at d = k (fraction)"
    mrl = caches.get(model)
    if mrl is None or mrl.kind not in NESTED_KINDS:
        return unmeasured("a", CLAIM_A, effect, f"no MRL / MRL-E model named {model!r} here")
    ff = {k: n for k, n in _ff_by_size(caches).items() if k <= small_max and k in mrl.nesting}
    if not ff:
        return unmeasured(
            "a", CLAIM_A, effect, f"no FF-k model with k ≤ {small_max} among {model}'s sizes"
        )
    sizes = sorted(ff)
    ours = linear_outcomes(mrl.logits(), mrl.labels, mrl.nesting, topk=1, model=model).at("top1")
    diffs = []
    for k in sizes:
        other = caches[ff[k]]
        _same_samples(mrl, other, (model, ff[k]))
        theirs = linear_outcomes(other.logits(), other.labels, other.nesting, topk=1).at("top1")
        diffs.append(ours[mrl.nesting.index(k)].astype(float) - theirs[-1])
    row, value, low, high = _lowest(np.stack(diffs), n_boot, level)
    effect = (
        f"min over FF-k, k in {sizes}, of {model} − FF-k linear top-1 at d = k (fraction; "
        f"lowest at k = {sizes[row]})"
    )
    return finding("a", CLAIM_A, effect, value, low, high)


def _knn_finding(
    eval_caches: Mapping[str, EmbeddingCache],
    database_caches: Mapping[str, EmbeddingCache] | None,
    model: str,
    baseline_model: str | None,
    span: range,
    margin: float,
    max_queries: int,
    n_boot: int,
    level: float,
    seed: int,
) -> dict:
    effect = (
        f"min over d ≤ {span.stop - 1} and baselines of {model} − baseline 1-NN at d (fraction)"
    )
    mrl = eval_caches.get(model)
    if mrl is None or mrl.kind not in NESTED_KINDS:
        return unmeasured("b", CLAIM_B, effect, f"no MRL / MRL-E model named {model!r} here")
    if baseline_model is None:
        ff = _ff_by_size(eval_caches)
        baseline_model = ff[max(ff)] if ff else None
    if baseline_model is None or baseline_model not in eval_caches:
        return unmeasured("b", CLAIM_B, effect, "no FF model whose features the baselines reduce")
    missing = [n for n in (model, baseline_model) if n not in (database_caches or {})]
    if missing:
        return unmeasured("b", CLAIM_B, effect, f"no k-NN database cache for {missing}")
    base, db, base_db = (
        eval_caches[baseline_model],
        database_caches[model],
        database_caches[baseline_model],
    )
    _same_samples(mrl, base, (model, baseline_model))
    sizes = [m for m in mrl.nesting if m in span and m <= base.feature_dim]
    if not sizes:
        return unmeasured(
            "b", CLAIM_B, effect, f"{model} has no size in {span.start}..{span.stop - 1}"
        )
    queries = _query_sample(mrl.num_samples, max_queries, seed)
    labels = np.asarray(mrl.labels)[queries]
    ours = knn_outcomes(
        db.features(), db.labels, mrl.features()[queries], labels, sizes, model=model
    ).at("1-NN")
    baselines = baseline_knn_outcomes(
        base_db.features(),
        base_db.labels,
        base.features()[queries],
        labels,
        sizes,
        methods=("first-m", "svd"),
        model=baseline_model,
        seed=seed,
    )
    diffs = np.concatenate([ours.astype(float) - b.at("1-NN") for b in baselines])
    row, value, low, high = _lowest(diffs, n_boot, level)
    worst = baselines[row // len(sizes)].label
    effect = (
        f"min over d in {sizes} of {model} 1-NN − {{Rand. FS, SVD}} of {baseline_model} 1-NN "
        f"at d (fraction; lowest: {worst} at d = {sizes[row % len(sizes)]}; "
        f"{len(queries)} queries)"
    )
    return finding("b", CLAIM_B, effect, value, low, high, threshold=margin)
