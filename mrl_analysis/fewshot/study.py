"""Few-shot and FLUID studies from caches (notebook 05; paper Appendix G, Tables 15-16).

The only module of the theme that reads caches: it runs the array-level functions of
:mod:`mrl_analysis.fewshot.episodes` and :mod:`mrl_analysis.fewshot.fluid` over named
models' caches.

* :func:`study_caches`: the caches of the all-classes and the class-subset models (the
  latter over every class, :func:`mrl_analysis.cache.experiment.build_subset_caches`) and
  the pretrain / novel classes;
* :func:`fewshot_table`: n-shot k-way NCM accuracy of every model (:class:`FewshotSpec`),
  with fewer episodes for the costly "all classes" way count;
* :func:`class_split` / :func:`pretrain_novel_labels`: the pretrain / novel classes of a
  dataset from the classes the class-subset models were trained on;
* :func:`novel_fewshot`: few-shot on the novel classes, each class-subset model next to
  its all-classes twin;
* :func:`findings`: the paper's finding (g), few-shot saturation vs shots, with its
  interval and verdict (:mod:`mrl_analysis.core.findings`);
* :func:`fluid_study`: one seeded long-tailed stream (:class:`FluidSpec`) from an
  evaluation split, run through every model's online NCM learner, its pretrain class
  means initialised from the model's training-split cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import (
    build_caches,
    build_subset_caches,
    class_labels,
    trained_classes,
)
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.core.checks import check_fraction, check_int
from mrl_analysis.core.findings import finding, unmeasured
from mrl_analysis.core.kinds import NESTED_KINDS
from mrl_analysis.core.sizes import cheapest_within
from mrl_analysis.core.stats import (
    LEVEL,
    N_BOOT,
    bootstrap_means,
    percentile_interval,
    smallest_within_replicates,
)
from mrl_analysis.fewshot.episodes import episode_accuracies, fewshot_accuracy
from mrl_analysis.fewshot.fluid import evaluate_fluid
from mrl_analysis.fewshot.headlines import stream_headlines
from mrl_analysis.fewshot.ncm import Metric, check_metric
from mrl_analysis.fewshot.stream import (
    Distribution,
    FluidStream,
    make_stream,
    resolve_head_threshold,
)
from mrl_analysis.fewshot.summary import class_split_table

__all__ = [
    "ClassSplit",
    "FewshotSpec",
    "FluidSpec",
    "FluidStudy",
    "NovelFewshot",
    "StudyCaches",
    "class_split",
    "fewshot_table",
    "findings",
    "fluid_study",
    "novel_fewshot",
    "pretrain_novel_labels",
    "sizes_from",
    "study_caches",
]


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FewshotSpec:
    """How the few-shot episodes are drawn and scored.

    ``ways`` entries of ``None`` mean all classes (of the setting), evaluated with
    ``all_classes_episodes`` episodes (default ``n_episodes``): an all-classes episode costs
    more and varies less. ``queries=None``: as many as the smallest class allows. Sizes
    below ``min_dim`` are skipped (see :func:`sizes_from`). Intervals: ``n_boot`` bootstrap
    resamples of the episodes at ``level``.
    """

    shots: Sequence[int] = (1, 3, 5, 7, 9)
    ways: Sequence[int | None] = (5, None)
    n_episodes: int = 300
    all_classes_episodes: int | None = None
    queries: int | None = 15
    metric: Metric = "cosine"
    min_dim: int = 1
    seed: int = 0
    n_boot: int = N_BOOT
    level: float = LEVEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", tuple(check_int(n, "shots", low=1) for n in self.shots))
        ways = tuple(None if w is None else check_int(w, "ways", low=2) for w in self.ways)
        object.__setattr__(self, "ways", ways)
        if not self.shots or not self.ways:
            raise ValueError("shots and ways need at least one value each, e.g. shots=(1, 5)")
        check_int(self.n_episodes, "n_episodes", low=1)
        if self.all_classes_episodes is not None:
            check_int(self.all_classes_episodes, "all_classes_episodes", low=1)
        if self.queries is not None:
            check_int(self.queries, "queries", low=1)
        check_metric(self.metric)
        check_int(self.min_dim, "min_dim", low=1)
        check_int(self.n_boot, "n_boot", low=1)
        check_fraction(self.level, "level", allow_one=False)


@dataclass(frozen=True)
class FluidSpec:
    """How the FLUID stream is drawn (``distribution``, ``alpha``, ``n_samples``, ``seed``;
    see :func:`~mrl_analysis.fewshot.stream.make_stream`) and evaluated.

    ``head_threshold`` below 1 is a fraction of the stream length (small streams);
    ``points``: steps of the learning curves. Sizes below ``min_dim`` are skipped.
    Intervals: ``n_boot`` bootstrap resamples of the stream's samples at ``level``.
    """

    distribution: Distribution = "zipf"
    alpha: float = 1.0
    n_samples: int | None = None
    head_threshold: float = 50
    metric: Metric = "cosine"
    min_dim: int = 1
    points: int = 200
    seed: int = 0
    n_boot: int = N_BOOT
    level: float = LEVEL

    def __post_init__(self) -> None:
        check_metric(self.metric)
        check_int(self.min_dim, "min_dim", low=1)
        check_int(self.points, "points", low=1)
        check_int(self.n_boot, "n_boot", low=1)
        check_fraction(self.level, "level", allow_one=False)
        resolve_head_threshold(self.head_threshold, 1)


# --------------------------------------------------------------------------- classes


def pretrain_novel_labels(
    class_ids: Sequence[str], checkpoints: Mapping[str, str | os.PathLike]
) -> tuple[np.ndarray, np.ndarray]:
    """``(pretrain, novel)`` labels of a dataset with ``class_ids``: pretrain are the classes
    every checkpoint was trained on, novel the rest.

    All checkpoints must share one class subset, so that "novel" means the same classes for
    every model compared.
    """
    if not checkpoints:
        raise ValueError("no checkpoints: give at least one model trained on a class subset")
    subsets = {name: trained_classes(path) for name, path in checkpoints.items()}
    first_name, first = next(iter(subsets.items()))
    for name, classes in subsets.items():
        if set(classes) != set(first):
            raise ValueError(
                f"{name} was trained on {sorted(classes)} but {first_name} on {sorted(first)}; "
                "train the compared models on the same class subset"
            )
    pretrain = np.sort(class_labels(class_ids, first))
    novel = np.setdiff1d(np.arange(len(class_ids)), pretrain)
    if novel.size == 0:
        raise ValueError(
            f"the models were trained on all {len(class_ids)} classes, so none is novel; train "
            "them on a subset (TrainConfig.classes, e.g. from split_classes)"
        )
    return pretrain, novel


@dataclass(frozen=True, eq=False)
class ClassSplit:
    """The pretrain and novel labels of a dataset and its class names."""

    pretrain: np.ndarray
    novel: np.ndarray
    class_names: list[str] = field(repr=False)

    def table(self) -> pd.DataFrame:
        """A row per origin: how many classes and their names."""
        return class_split_table(self.pretrain, self.novel, self.class_names)


def class_split(
    caches: Mapping[str, EmbeddingCache], checkpoints: Mapping[str, str | os.PathLike]
) -> ClassSplit:
    """Pretrain / novel classes of the dataset of ``caches`` (any model's cache of it), from
    the classes the class-subset ``checkpoints`` were trained on."""
    if not caches:
        raise ValueError("no caches: give at least one cache of the dataset")
    first = next(iter(caches.values()))
    pretrain, novel = pretrain_novel_labels(first.class_ids, checkpoints)
    return ClassSplit(pretrain, novel, list(first.class_names))


@dataclass(frozen=True, eq=False)
class StudyCaches:
    """The caches of the study: ``evals`` (all-classes models, evaluation split),
    ``novel_evals`` / ``novel_trains`` (class-subset models over every class, evaluation and
    training splits) and ``classes``, the pretrain / novel split."""

    evals: dict[str, EmbeddingCache]
    novel_evals: dict[str, EmbeddingCache]
    novel_trains: dict[str, EmbeddingCache]
    classes: ClassSplit

    @property
    def kinds(self) -> dict[str, str]:
        """Head kind (``"mrl"``, ``"mrl-e"``, ``"ff"``) of every all-classes model."""
        return {name: cache.kind for name, cache in self.evals.items()}


def study_caches(
    models: Mapping[str, str | os.PathLike],
    novel_models: Mapping[str, str | os.PathLike],
    dataset: str,
    eval_split: str = "test",
    train_split: str = "train",
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> StudyCaches:
    """Build (or reuse) every cache the study reads: the all-classes ``models`` on the
    evaluation split, the class-subset ``novel_models`` on both splits with every class."""
    where = {"cache_root": cache_root, "data_root": data_root, "progress": progress}
    caches = build_caches(models, dataset, [eval_split], **where)
    subset = build_subset_caches(novel_models, dataset, [eval_split, train_split], **where)
    novel_evals = {name: per_split[eval_split] for name, per_split in subset.items()}
    return StudyCaches(
        evals={name: per_split[eval_split] for name, per_split in caches.items()},
        novel_evals=novel_evals,
        novel_trains={name: per_split[train_split] for name, per_split in subset.items()},
        classes=class_split(novel_evals, novel_models),
    )


# --------------------------------------------------------------------------- few-shot


def sizes_from(cache: EmbeddingCache, min_dim: int = 1, name: str = "model") -> list[int]:
    """The nesting sizes of ``cache`` from ``min_dim`` up.

    Features after a ReLU and pooling are non-negative, so an L2-normalized 1-d feature is
    1 (or 0) for every sample and NCM at m = 1 is chance by construction: ``min_dim=2``
    leaves it out, as the k-NN tables of notebook 01 do.
    """
    sizes = [m for m in cache.nesting if m >= min_dim]
    if not sizes:
        raise ValueError(
            f"{name} has no size >= min_dim={min_dim} (its nesting: {cache.nesting}); lower min_dim"
        )
    return sizes


def fewshot_table(
    caches: Mapping[str, EmbeddingCache],
    spec: FewshotSpec = FewshotSpec(),
    *,
    classes: Sequence[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Few-shot NCM accuracy (``episodes.COLUMNS``, fractions) of every model at its sizes.

    ``classes`` restricts the episodes to those labels (default every label); "all classes"
    means all of them. Episodes depend only on the labels, so models evaluated on the same
    split are compared on the same episodes.
    """
    if not caches:
        raise ValueError("no caches: give at least one model's evaluation-split cache")
    tables = []
    for name, cache in caches.items():
        nesting = sizes_from(cache, spec.min_dim, name)
        labels = cache.labels
        n_classes = np.unique(labels if classes is None else np.asarray(classes)).size
        fixed = [w for w in spec.ways if w is not None and w != n_classes]
        every = len(fixed) < len(spec.ways)
        features = cache.features()
        common = {
            "shots": spec.shots,
            "queries": spec.queries,
            "classes": classes,
            "metric": spec.metric,
            "seed": spec.seed,
            "n_boot": spec.n_boot,
            "level": spec.level,
            "model": name,
            "progress": progress,
        }
        if fixed:
            tables.append(
                fewshot_accuracy(
                    features, labels, nesting, ways=fixed, n_episodes=spec.n_episodes, **common
                )
            )
        if every:
            episodes = spec.all_classes_episodes or spec.n_episodes
            tables.append(
                fewshot_accuracy(
                    features, labels, nesting, ways=[None], n_episodes=episodes, **common
                )
            )
    return pd.concat(tables, ignore_index=True)


@dataclass(frozen=True, eq=False)
class NovelFewshot:
    """Few-shot on novel classes: the ``table`` (models named ``"MRL (6 classes)"`` and
    ``"MRL (all 10 classes)"``) and ``twins``: each class-subset model's all-classes
    counterpart in it (None without one)."""

    table: pd.DataFrame
    twins: dict[str, str | None]


def novel_fewshot(
    subset_caches: Mapping[str, EmbeddingCache],
    caches: Mapping[str, EmbeddingCache],
    split: ClassSplit,
    spec: FewshotSpec = FewshotSpec(),
    *,
    progress: bool = True,
) -> NovelFewshot:
    """Few-shot on ``split.novel`` only: class-subset models (``subset_caches``) next to the
    all-classes model of the same name in ``caches``, on the same episodes.

    Way counts the novel classes cannot fill are dropped; "all classes" is every novel
    class.
    """
    n_novel = len(split.novel)
    ways = tuple(w for w in spec.ways if w is None or w < n_novel)
    if not ways:
        raise ValueError(
            f"ways {list(spec.ways)} leave nothing to evaluate on {n_novel} novel classes; "
            "add None (all classes) or a smaller way count"
        )
    label = {name: f"{name} ({len(split.pretrain)} classes)" for name in subset_caches}
    twin = {
        name: f"{name} (all {len(split.class_names)} classes)"
        for name in subset_caches
        if name in caches
    }
    named = {
        **{label[n]: c for n, c in subset_caches.items()},
        **{twin[n]: caches[n] for n in twin},
    }
    table = fewshot_table(
        named, replace(spec, ways=ways), classes=split.novel.tolist(), progress=progress
    )
    return NovelFewshot(table, {label[n]: twin.get(n) for n in subset_caches})


# --------------------------------------------------------------------------- finding (g)

#: The paper's finding (g) (Appendix G, Table 15: 1-shot saturates at 32 dims, more shots
#: keep gaining from larger sizes).
FINDING_G = "g"
CLAIM_G = "few-shot accuracy saturates at smaller sizes for fewer shots"


def _saturation_model(caches: Mapping[str, EmbeddingCache], model: str | None) -> str | None:
    if model is not None:
        if model not in caches:
            raise ValueError(f"model {model!r} is not among the caches {sorted(caches)}")
        return model
    kinds = {name: cache.kind for name, cache in caches.items()}
    ranked = [n for n, k in kinds.items() if k == "mrl"] + [
        n for n, k in kinds.items() if k in NESTED_KINDS
    ]
    return ranked[0] if ranked else None


def findings(
    caches: Mapping[str, EmbeddingCache],
    *,
    model: str | None = None,
    shots: Sequence[int] = (1, 9),
    ways: int = 5,
    queries: int | None = 15,
    n_episodes: int = 300,
    tolerance: float = 0.01,
    min_dim: int = 2,
    metric: Metric = "cosine",
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> list[dict]:
    """Finding (g), "few-shot accuracy saturates at smaller sizes for fewer shots", as one
    row of :func:`mrl_analysis.core.findings.finding`.

    ``caches``: named evaluation-split caches of a study (``{display name: cache}``); the
    finding is measured on ``model`` (default: the first ``"mrl"`` cache, else the first
    nested one; without either the row is ``unmeasured``). Any cache works, imported ones
    included: few-shot reads features only.

    Effect, in log2 steps of size: ``log2 s(n_max) - log2 s(n_min)``, where ``n_min`` /
    ``n_max`` are the fewest / most of ``shots`` and ``s(n)`` is the saturation size of
    ``n``-shot ``ways``-way NCM accuracy: the smallest size of the model's nesting (from
    ``min_dim`` up) whose mean accuracy over ``n_episodes`` episodes is at least the
    largest size's minus ``tolerance`` (a fraction; the rule of :mod:`mrl_analysis.core.sizes`).
    The episodes are those of :func:`fewshot_table` with the same settings. Interval: the
    ``level`` percentile interval of the effect over ``n_boot`` bootstrap replicates, each
    resampling the episodes of both shot counts (independently; shared by every size of a
    shot count) and recomputing both saturation sizes. The effect moves in whole ladder
    steps, so the threshold is half the smallest log2 step of the ladder (0.5 on a doubling
    nesting), direction "above": the finding holds when the whole interval is at least one
    step above 0 (more shots saturate strictly later), does not hold when it is at most 0,
    and cannot be measured when it spans both.
    """
    shot_counts = sorted({check_int(n, "shots", low=1) for n in shots})
    if len(shot_counts) < 2:
        raise ValueError(f"shots needs two different counts to compare, got {list(shots)}")
    ways = check_int(ways, "ways", low=2)
    tolerance = check_fraction(tolerance, "tolerance")
    few, many = shot_counts[0], shot_counts[-1]
    effect = (
        f"log2 saturation size at {many} shots − at {few} shot(s), {ways}-way NCM "
        f"(size within {100 * tolerance:g} pt of the largest; log2 steps)"
    )
    name = _saturation_model(caches, model)
    if name is None:
        return [
            unmeasured(
                FINDING_G,
                CLAIM_G,
                effect,
                "no MRL or MRL-E model in this study: pass model= to measure another",
            )
        ]
    cache = caches[name]
    sizes = sizes_from(cache, min_dim, name)
    if len(sizes) < 2:
        return [
            unmeasured(
                FINDING_G,
                CLAIM_G,
                f"{effect}, {name}",
                f"{name} has one size from min_dim={min_dim} ({sizes}): nothing saturates",
            )
        ]
    features, labels = cache.features(), cache.labels
    dims, reps = [], []
    for i, n in enumerate((few, many)):
        try:
            acc = episode_accuracies(
                features,
                labels,
                sizes,
                shots=n,
                ways=ways,
                queries=queries,
                n_episodes=n_episodes,
                metric=metric,
                seed=seed,
            )
        except ValueError as exc:  # too few classes or samples for these episodes
            return [unmeasured(FINDING_G, CLAIM_G, f"{effect}, {name}", str(exc))]
        # Independent resamples per shot count: their episodes are independent draws.
        boot = bootstrap_means(acc, n_boot, level=level, seed=seed + i)
        dims.append(sizes[int(cheapest_within(boot.mean, sizes, boot.mean[-1], tolerance))])
        reps.append(np.log2(smallest_within_replicates(boot, sizes, tolerance)))
    low, high = percentile_interval(reps[1] - reps[0], level)
    value = float(np.log2(dims[1]) - np.log2(dims[0]))
    return [
        finding(
            FINDING_G,
            CLAIM_G,
            f"{effect}, {name}: {few}-shot saturates at m = {dims[0]}, {many}-shot at "
            f"m = {dims[1]}",
            value,
            float(low),
            float(high),
            threshold=float(np.diff(np.log2(sizes)).min() / 2),
        )
    ]


# --------------------------------------------------------------------------- FLUID


@dataclass(frozen=True, eq=False)
class FluidStudy:
    """One stream through every model: ``accuracy`` per category and ``curves`` tables of
    :mod:`mrl_analysis.fewshot.fluid`, concatenated over models; ``classes`` one row per
    class; ``head_threshold`` in samples; ``init_samples``: training samples the pretrain
    class means start from."""

    stream: FluidStream
    accuracy: pd.DataFrame
    curves: pd.DataFrame
    classes: pd.DataFrame
    head_threshold: float
    init_samples: int

    def stream_headlines(self, init_split: str = "train") -> pd.DataFrame:
        """:func:`~mrl_analysis.fewshot.headlines.stream_headlines` of this study."""
        return stream_headlines(self.stream, self.head_threshold, self.init_samples, init_split)


def fluid_study(
    eval_caches: Mapping[str, EmbeddingCache],
    train_caches: Mapping[str, EmbeddingCache],
    pretrain: Sequence[int],
    novel: Sequence[int],
    spec: FluidSpec = FluidSpec(),
    *,
    progress: bool = True,
) -> FluidStudy:
    """FLUID on every model: one stream drawn from the evaluation split (the same samples,
    in the same order, for every model); pretrain means from each model's training split.

    ``classes`` lists every class with its name, stream count, origin (pretrain / novel),
    part (head / tail) and category.
    """
    if not eval_caches:
        raise ValueError("no caches: give at least one model's evaluation-split cache")
    absent = sorted(set(eval_caches) - set(train_caches))
    if absent:
        raise ValueError(
            f"no training-split cache for {absent}: the pretrain class means come from it"
        )
    first_name, first = next(iter(eval_caches.items()))
    labels = first.labels
    for name, cache in eval_caches.items():
        if not np.array_equal(cache.labels, labels):
            raise ValueError(
                f"{name}'s evaluation cache holds other samples than {first_name}'s; embed "
                "every model on the same split"
            )
    stream = make_stream(
        labels,
        pretrain,
        novel,
        n_samples=spec.n_samples,
        distribution=spec.distribution,
        alpha=spec.alpha,
        seed=spec.seed,
    )
    accuracy, curves = [], []
    for name, cache in eval_caches.items():
        train = train_caches[name]
        table, curve = evaluate_fluid(
            cache.features(),
            stream,
            sizes_from(cache, spec.min_dim, name),
            init_features=train.features(),
            init_labels=train.labels,
            head_threshold=spec.head_threshold,
            metric=spec.metric,
            model=name,
            points=spec.points,
            n_boot=spec.n_boot,
            level=spec.level,
            seed=spec.seed,
            progress=progress,
        )
        accuracy.append(table)
        curves.append(curve)
    classes = stream.class_table(spec.head_threshold)
    names = first.class_names
    classes.insert(1, "name", [names[c] if c < len(names) else str(c) for c in classes["class"]])
    init_labels = train_caches[first_name].labels
    return FluidStudy(
        stream=stream,
        accuracy=pd.concat(accuracy, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        classes=classes,
        head_threshold=resolve_head_threshold(spec.head_threshold, len(stream)),
        init_samples=int(np.isin(init_labels, stream.pretrain_classes).sum()),
    )
