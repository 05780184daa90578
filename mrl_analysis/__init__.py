"""mrl_analysis: an analysis workbench for Matryoshka Representation Learning.

The names below are the public API; each lives in the module named for its idea and is
imported on first use, so ``import mrl_analysis`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # data
    "get_dataset": "data.datasets",
    "list_datasets": "data.datasets",
    "split_classes": "data.datasets",
    "get_eval_transform": "data.datasets",
    "DatasetBundle": "data.datasets",
    "load_wordnet": "data.wordnet",
    # models and checkpoints
    "build_model": "models.network",
    "default_nesting": "models.network",
    "MatryoshkaModel": "models.network",
    "MatryoshkaCELoss": "models.loss",
    "load_model": "models.checkpoints",
    "load_checkpoint": "models.checkpoints",
    "save_checkpoint": "models.checkpoints",
    "TrainConfig": "models.training",
    "train": "models.training",
    # caches
    "embed_dataset": "cache.build",
    "open_cache": "cache.reader",
    "cache_path": "cache.store",
    "EmbeddingCache": "cache.reader",
    "CacheCorruptedError": "cache.store",
    "build_caches": "cache.experiment",
    # analyses
    "linear_accuracy": "accuracy.metrics",
    "knn_accuracy": "accuracy.metrics",
    "mrl_e_interpolated_accuracy": "accuracy.metrics",
    "baseline_knn_accuracy": "accuracy.baselines",
    "SuperclassMap": "data.hierarchy",
    "superclass_accuracy": "superclass.metrics",
    "per_class_accuracy": "superclass.per_class",
    "oracle_summary": "routing.oracle",
    "cascade_study": "routing.cascade",
    "router_study": "routing.router",
    # figures and runs
    "save_figure": "figures.save",
    "run_batch": "app.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mrl_analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mrl_analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
