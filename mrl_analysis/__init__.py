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
    "get_dataset": "datasets",
    "list_datasets": "datasets",
    "split_classes": "datasets",
    "get_eval_transform": "datasets",
    "DatasetBundle": "datasets",
    "load_wordnet": "wordnet",
    # models and checkpoints
    "build_model": "models",
    "default_nesting": "models",
    "MatryoshkaModel": "models",
    "MatryoshkaCELoss": "loss",
    "load_model": "checkpoints",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
    "TrainConfig": "training",
    "train": "training",
    # caches
    "embed_dataset": "cache",
    "open_cache": "cache",
    "cache_path": "cache",
    "EmbeddingCache": "cache",
    "CacheCorruptedError": "cache",
    "build_caches": "experiment",
    # analyses
    "linear_accuracy": "accuracy",
    "knn_accuracy": "accuracy",
    "mrl_e_interpolated_accuracy": "accuracy",
    "baseline_knn_accuracy": "baselines",
    "SuperclassMap": "superclass",
    "superclass_accuracy": "superclass",
    "per_class_accuracy": "per_class",
    "oracle_summary": "oracle",
    "cascade_study": "cascade",
    "router_study": "router",
    # figures and runs
    "save_figure": "figures",
    "run_batch": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mrl_analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mrl_analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
