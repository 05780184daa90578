"""The default demo: Fashion-MNIST models → embedding caches → the default batch.

The model set is MRL, MRL-E and FF-k at a spread of k, all on a torchvision ResNet18
with a 1-channel input. Fashion-MNIST has 10 classes, so the interesting part of the
accuracy-vs-size curve is 1-8 dims: the nesting starts at 1.
"""

from __future__ import annotations

import time
from pathlib import Path

from mrl_analysis.training import TrainConfig

DATASET = "fashion-mnist"
ARCH = "resnet18"
NESTING = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
FF_SIZES = [2, 8, 512]
CHECKPOINT_DIR = Path("data/checkpoints") / DATASET


def demo_models(epochs: int = 2) -> dict[str, TrainConfig]:
    """Named training configs of the demo models (``mrl``, ``mrl-e``, ``ff-<k>``)."""
    common = {"dataset": DATASET, "arch": ARCH, "epochs": epochs, "seed": 0}
    models = {
        "mrl": TrainConfig(kind="mrl", nesting=NESTING, **common),
        "mrl-e": TrainConfig(kind="mrl-e", nesting=NESTING, **common),
    }
    for k in FF_SIZES:
        models[f"ff-{k}"] = TrainConfig(kind="ff", ff_dim=k, **common)
    return models


#: Display names used in notebooks and caches for the demo checkpoints.
DISPLAY_NAMES = {"mrl": "MRL", "mrl-e": "MRL-E", **{f"ff-{k}": f"FF-{k}" for k in FF_SIZES}}

#: Pretraining classes of the class-subset models: ``split_classes(class_ids, 6, seed=0)``.
N_PRETRAIN = 6
SUBSET_CHECKPOINT_DIR = Path("data/checkpoints") / f"{DATASET}-{N_PRETRAIN}"


def novel_class_models(epochs: int = 2) -> dict[str, TrainConfig]:
    """MRL and FF-512 trained on ``N_PRETRAIN`` classes only (``mrl``, ``ff-512``).

    Notebook 05 evaluates them on the other classes (novel-class few-shot, FLUID); their
    caches come from ``fewshot_study.build_subset_caches``, which embeds every class.
    """
    from mrl_analysis.datasets import get_dataset, split_classes

    pretrain, _ = split_classes(get_dataset(DATASET, "test").class_ids, N_PRETRAIN, seed=0)
    common = {"dataset": DATASET, "arch": ARCH, "epochs": epochs, "seed": 0, "classes": pretrain}
    return {
        "mrl": TrainConfig(kind="mrl", nesting=NESTING, **common),
        "ff-512": TrainConfig(kind="ff", ff_dim=512, **common),
    }


def run_demo(
    *,
    epochs: int = 2,
    only: list[str] | None = None,
    started: float | None = None,
    batch: str | None = None,
    force: bool = False,
) -> int:
    """``make demo``: train what is missing, cache embeddings, run the default batch."""
    from mrl_analysis.experiment import build_caches
    from mrl_analysis.fewshot_study import build_subset_caches
    from mrl_analysis.runner import print_summary, run_batch
    from mrl_analysis.training import train_many

    start = time.perf_counter() if started is None else started
    print(f"[demo] 1/3 training the default {DATASET} models into {CHECKPOINT_DIR}/")
    paths = train_many(demo_models(epochs), CHECKPOINT_DIR, only=only)
    subset = train_many(novel_class_models(epochs), SUBSET_CHECKPOINT_DIR, only=only)
    print(f"[demo] 2/3 caching embeddings ({time.perf_counter() - start:.0f}s so far)")
    build_caches({DISPLAY_NAMES[n]: p for n, p in paths.items()}, DATASET, ["train", "test"])
    build_subset_caches(
        {DISPLAY_NAMES[n]: p for n, p in subset.items()}, DATASET, ["train", "test"]
    )
    print(f"[demo] 3/3 running the notebooks ({time.perf_counter() - start:.0f}s so far)")
    summary = run_batch(batch, force=force)
    print_summary(summary)
    folders = sorted({str(Path(f)) for f in summary["figures_dir"]})
    print(f"[demo] done in {time.perf_counter() - start:.0f}s; figures in:")
    for folder in folders:
        print(f"  {folder}")
    return 1 if (summary["status"] != "ok").any() else 0
