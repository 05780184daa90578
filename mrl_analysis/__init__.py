"""mrl_analysis: an analysis workbench for Matryoshka Representation Learning.

The names below are the public API: the data, model and cache layers, and each theme's
study (reads caches, returns tidy tables) and figures. Each name is imported on first use,
so ``import mrl_analysis`` stays cheap. ``docs/architecture.md`` maps the packages.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # data
    "get_dataset": "data.registry",
    "list_datasets": "data.registry",
    "split_classes": "data.registry",
    "get_eval_transform": "data.registry",
    "DatasetBundle": "data.bundle",
    "load_wordnet": "data.wordnet",
    "SuperclassMap": "data.hierarchy",
    "resolve_superclasses": "data.hierarchy",
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
    "DiskFullError": "cache.store",
    "ClassMismatchError": "cache.build",
    "HeadlessCacheError": "cache.reader",
    "import_embeddings": "cache.importer",
    "build_caches": "cache.experiment",
    "build_subset_caches": "cache.experiment",
    "score_sets": "cache.scores",
    # per-size accuracy
    "linear_accuracy": "accuracy.metrics",
    "knn_accuracy": "accuracy.metrics",
    "mrl_e_interpolated_accuracy": "accuracy.metrics",
    "baseline_knn_accuracy": "accuracy.baselines",
    "linear_table": "accuracy.study",
    "knn_table": "accuracy.study",
    "linear_study": "accuracy.study",
    "knn_study": "accuracy.study",
    "SizeStudy": "accuracy.study",
    "size_headlines": "accuracy.headlines",
    "accuracy_figure": "accuracy.plots",
    # superclasses
    "superclass_accuracy": "superclass.metrics",
    "per_class_accuracy": "superclass.per_class",
    "superclass_study": "superclass.study",
    "superclass_map_for": "superclass.study",
    "superclass_accuracy_figure": "superclass.plots",
    "per_superclass_figure": "superclass.plots",
    "within_superclass_error_figure": "superclass.plots",
    "per_class_accuracy_figure": "superclass.plots",
    "relative_accuracy_figure": "superclass.plots",
    # routing
    "oracle_summary": "routing.oracle",
    "cascade_study": "routing.cascade",
    "router_study": "routing.router",
    "SplitSettings": "routing.cascade",
    "eval_score_sets": "routing.study",
    "oracle_tables": "routing.study",
    "cascade_analysis": "routing.study",
    "router_analysis": "routing.study",
    "first_correct_figure": "routing.plots",
    "tradeoff_figure": "routing.plots",
    "cascade_figure": "routing.plots",
    "router_figure": "routing.plots",
    # interpretability
    "CamSettings": "interpret.cams",
    "size_cams": "interpret.cams",
    "find_disagreements": "interpret.disagreement",
    "cache_disagreements": "interpret.study",
    "dataset_cams": "interpret.study",
    "cam_grid_figure": "interpret.plots",
    "cam_summary_figure": "interpret.plots",
    "disagreement_summary_figure": "interpret.plots",
    "pairwise_disagreement_figure": "interpret.plots",
    # few-shot and FLUID
    "FewshotSpec": "fewshot.study",
    "FluidSpec": "fewshot.study",
    "fewshot_table": "fewshot.study",
    "novel_fewshot": "fewshot.study",
    "fluid_study": "fewshot.study",
    "fewshot_figure": "fewshot.plots",
    "saturation_figure": "fewshot.plots",
    "fluid_heatmap_figure": "fewshot.plots",
    "fluid_bars_figure": "fewshot.plots",
    "learning_curves_figure": "fewshot.plots",
    # retrieval
    "IndexSpec": "retrieval.index",
    "RetrievalPlan": "retrieval.plan",
    "evaluate_retrieval": "retrieval.tables",
    "evaluate_models": "retrieval.study",
    "retrieval_study": "retrieval.study",
    "retrieval_headlines": "retrieval.summary",
    "metric_vs_size_figure": "retrieval.plots",
    "cost_tradeoff_figure": "retrieval.plots",
    "shortlist_ablation_figure": "retrieval.plots",
    # how Matryoshka is an embedding
    "diagnose": "diagnostic.study",
    "Diagnosis": "diagnostic.study",
    # the paper's findings
    "paper_findings": "findings.study",
    # the explorer
    "explore": "explore.widget",
    "ExplorerState": "explore.state",
    "load_inputs": "explore.study",
    # figures, studies and runs
    "save_figure": "figures.save",
    "load_study": "app.studies",
    "study_parameters": "app.studies",
    "run_batch": "app.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mrl_analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mrl_analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
