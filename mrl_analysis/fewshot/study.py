"""Few-shot and FLUID studies from caches (notebook 05; paper Appendix G, Tables 15-16).

Combines the array-level functions of :mod:`mrl_analysis.fewshot.episodes` and
:mod:`mrl_analysis.fewshot.fluid` over named models' caches:

* :func:`fewshot_table`: n-shot k-way NCM accuracy of every model, with fewer episodes for
  the costly "all classes" way count;
* :func:`build_subset_caches`: caches of models trained on a class subset
  (``TrainConfig.classes``) over *every* class of a split, since the novel-class settings
  need features of the classes a model never saw;
* :func:`pretrain_novel_labels`: the pretrain / novel split of a dataset's labels from the
  classes those models were trained on;
* :func:`fluid_study`: one seeded long-tailed stream from an evaluation split, run through
  every model's online NCM learner, its pretrain class means initialised from the model's
  training-split cache.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrl_analysis.cache.experiment import build_caches, require_checkpoints
from mrl_analysis.cache.reader import EmbeddingCache
from mrl_analysis.data.datasets import DatasetBundle
from mrl_analysis.fewshot.episodes import Metric, fewshot_accuracy
from mrl_analysis.fewshot.fluid import (
    Distribution,
    FluidStream,
    evaluate_fluid,
    make_stream,
    resolve_head_threshold,
)
from mrl_analysis.models.checkpoints import load_checkpoint
from mrl_analysis.models.network import MatryoshkaModel

__all__ = [
    "FluidStudy",
    "build_subset_caches",
    "class_labels",
    "fewshot_table",
    "fluid_study",
    "pretrain_novel_labels",
    "sizes_from",
    "subset_cache_name",
    "trained_classes",
]


# --------------------------------------------------------------------------- classes


def class_labels(class_ids: Sequence[str], chosen: Sequence[str]) -> np.ndarray:
    """Labels (positions in ``class_ids``) of the class ids ``chosen``, in their order."""
    index = {str(c): i for i, c in enumerate(class_ids)}
    unknown = [str(c) for c in chosen if str(c) not in index]
    if unknown:
        raise ValueError(
            f"classes {unknown[:10]} are not among the dataset's class ids "
            f"{list(index)[:10]}{' ...' if len(index) > 10 else ''}; pass ids of this dataset"
        )
    return np.array([index[str(c)] for c in chosen], dtype=np.int64)


def trained_classes(checkpoint: str | os.PathLike) -> list[str]:
    """The class ids a checkpoint of ours was trained on (its ``meta["classes"]``)."""
    raw = load_checkpoint(checkpoint)
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    return _recorded_classes(meta, raw.get("class_names"), checkpoint)


def _recorded_classes(
    meta: Mapping, class_names: Sequence[str] | None, source: object
) -> list[str]:
    classes = meta.get("classes") or class_names
    if not classes:
        raise ValueError(
            f"{source} records no class list (meta['classes'] or class_names); the "
            "novel-class settings need a checkpoint trained with mrl_analysis.train"
        )
    return [str(c) for c in classes]


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
            "them on a subset (TrainConfig.classes, e.g. from datasets.split_classes)"
        )
    return pretrain, novel


# --------------------------------------------------------------------------- caches


def subset_cache_name(name: str, classes: Sequence[str]) -> str:
    """Cache folder name of a model trained on ``classes``: ``<name>.subset-<k>-<hash>``.

    A class-subset model is usually shown under the same display name as its all-classes
    counterpart ("MRL"); its own folder keeps the two caches from replacing each other.
    """
    digest = hashlib.sha256("\n".join(sorted(map(str, classes))).encode()).hexdigest()
    return f"{name}.subset-{len(classes)}-{digest[:8]}"


def build_subset_caches(
    models: Mapping[str, str | os.PathLike],
    dataset: str,
    splits: Sequence[str],
    *,
    cache_root: str | os.PathLike = "data/cache",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, dict[str, EmbeddingCache]]:
    """Caches ``{name: {split: EmbeddingCache}}`` of class-subset models over all classes.

    Like :func:`mrl_analysis.cache.experiment.build_caches`, but for models trained on some of the
    dataset's classes: each split is embedded with *all* its classes, so labels index the
    dataset's classes (``cache.class_ids``) while the logits have one column per class the
    model was trained on. The few-shot and FLUID learners read only features and labels.
    Caches live under :func:`subset_cache_name`.
    """
    require_checkpoints(
        models,
        "train them first (`make demo` trains the Fashion-MNIST class-subset models, or "
        "`mrl-analysis train` with classes=...)",
    )

    def subset_folder(
        name: str, model: MatryoshkaModel, bundles: Mapping[str, DatasetBundle]
    ) -> str:
        classes = _recorded_classes(model.meta, model.class_names, models[name])
        trained_on = model.meta.get("dataset")
        if trained_on is not None and trained_on != dataset:
            raise ValueError(f"{name} was trained on {trained_on!r}, not on {dataset!r}")
        for bundle in bundles.values():
            class_labels(bundle.class_ids, classes)  # every trained class must exist
        return subset_cache_name(name, classes)

    with warnings.catch_warnings():
        # Expected here: the bundle names all classes, the logits only the trained ones.
        warnings.filterwarnings("ignore", message=r"the bundle names \d+ classes but")
        return build_caches(
            models,
            dataset,
            splits,
            cache_root=cache_root,
            data_root=data_root,
            batch_size=batch_size,
            progress=progress,
            cache_name=subset_folder,
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
    *,
    shots: Sequence[int] = (1, 3, 5, 7, 9),
    ways: Sequence[int | None] = (5, None),
    n_episodes: int = 300,
    all_classes_episodes: int | None = None,
    queries: int | None = 15,
    classes: Sequence[int] | None = None,
    metric: Metric = "cosine",
    min_dim: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Few-shot NCM accuracy (``fewshot.COLUMNS``) of every model at its nesting sizes.

    ``ways`` entries of ``None`` (or the class count) mean all classes (of ``classes``,
    default every label), evaluated with ``all_classes_episodes`` episodes (default
    ``n_episodes``): an all-classes episode costs more and varies less. Episodes depend only
    on the labels, so models evaluated on the same split are compared on the same episodes.
    Sizes below ``min_dim`` are skipped (see :func:`sizes_from`).
    """
    if not caches:
        raise ValueError("no caches: give at least one model's evaluation-split cache")
    tables = []
    for name, cache in caches.items():
        nesting = sizes_from(cache, min_dim, name)
        labels = cache.labels
        n_classes = np.unique(labels if classes is None else np.asarray(classes)).size
        fixed = [int(w) for w in ways if w is not None and int(w) != n_classes]
        every = len(fixed) < len(ways)
        features = cache.features()
        common = {
            "shots": shots,
            "queries": queries,
            "classes": classes,
            "metric": metric,
            "seed": seed,
            "model": name,
            "progress": progress,
        }
        if fixed:
            tables.append(
                fewshot_accuracy(
                    features, labels, nesting, ways=fixed, n_episodes=n_episodes, **common
                )
            )
        if every:
            episodes = n_episodes if all_classes_episodes is None else all_classes_episodes
            tables.append(
                fewshot_accuracy(
                    features, labels, nesting, ways=[None], n_episodes=episodes, **common
                )
            )
    return pd.concat(tables, ignore_index=True)


# --------------------------------------------------------------------------- FLUID


@dataclass(frozen=True, eq=False)
class FluidStudy:
    """One stream through every model: ``accuracy`` per category and ``curves`` tables of
    :mod:`mrl_analysis.fewshot.fluid`, concatenated over models; ``classes`` one row per class."""

    stream: FluidStream
    accuracy: pd.DataFrame
    curves: pd.DataFrame
    classes: pd.DataFrame
    head_threshold: float


def fluid_study(
    eval_caches: Mapping[str, EmbeddingCache],
    train_caches: Mapping[str, EmbeddingCache],
    pretrain: Sequence[int],
    novel: Sequence[int],
    *,
    n_samples: int | None = None,
    distribution: Distribution = "zipf",
    alpha: float = 1.0,
    seed: int = 0,
    head_threshold: float = 50,
    metric: Metric = "cosine",
    min_dim: int = 1,
    points: int = 200,
    progress: bool = True,
) -> FluidStudy:
    """FLUID on every model: one stream drawn from the evaluation split (the same samples,
    in the same order, for every model); pretrain means from each model's training split.

    ``head_threshold`` below 1 is a fraction of the stream length (small streams);
    ``head_threshold`` in the result is the resolved count. ``classes`` lists every class
    with its name, stream count, origin (pretrain / novel), part (head / tail) and
    category. Sizes below ``min_dim`` are skipped (see :func:`sizes_from`).
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
        n_samples=n_samples,
        distribution=distribution,
        alpha=alpha,
        seed=seed,
    )
    accuracy, curves = [], []
    for name, cache in eval_caches.items():
        train = train_caches[name]
        table, curve = evaluate_fluid(
            cache.features(),
            stream,
            sizes_from(cache, min_dim, name),
            init_features=train.features(),
            init_labels=train.labels,
            head_threshold=head_threshold,
            metric=metric,
            model=name,
            points=points,
            progress=progress,
        )
        accuracy.append(table)
        curves.append(curve)
    classes = stream.class_table(head_threshold)
    names = first.class_names
    classes.insert(1, "name", [names[c] if c < len(names) else str(c) for c in classes["class"]])
    return FluidStudy(
        stream=stream,
        accuracy=pd.concat(accuracy, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        classes=classes,
        head_threshold=resolve_head_threshold(head_threshold, len(stream)),
    )
