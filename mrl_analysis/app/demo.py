"""The default demo: Fashion-MNIST models → embedding caches → the default batch.

Also the Tiny-ImageNet demo (``make demo-tiny``, :func:`run_tiny_imagenet`), at the end.

The model set is MRL, MRL-E and FF-k at a spread of k, all on a torchvision ResNet18
with a 1-channel input. Fashion-MNIST has 10 classes, so the interesting part of the
accuracy-vs-size curve is 1-8 dims: the nesting starts at 1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from mrl_analysis.models.training import TrainConfig

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
    from mrl_analysis.data.datasets import get_dataset, split_classes

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
    return _train_cache_run(
        "demo",
        DATASET,
        (demo_models(epochs), CHECKPOINT_DIR),
        (novel_class_models(epochs), SUBSET_CHECKPOINT_DIR),
        DISPLAY_NAMES,
        ["train", "test"],
        batch,
        only=only,
        started=started,
        force=force,
    )


def _train_cache_run(
    tag: str,
    dataset: str,
    models: tuple[dict[str, TrainConfig], Path],
    subset_models: tuple[dict[str, TrainConfig], Path],
    display_names: dict[str, str],
    splits: list[str],
    batch: str | dict | None,
    *,
    data_root: str | os.PathLike | None = None,
    only: list[str] | None,
    started: float | None,
    force: bool,
) -> int:
    """Train what is missing (all classes, and a class subset for the novel-class
    analyses), cache every split, run the batch; print the timings and figure folders."""
    from mrl_analysis.app.runner import print_summary, run_batch
    from mrl_analysis.cache.experiment import build_caches
    from mrl_analysis.fewshot.study import build_subset_caches
    from mrl_analysis.models.training import train_many

    start = time.perf_counter() if started is None else started
    (configs, out_dir), (subset_configs, subset_dir) = models, subset_models
    print(f"[{tag}] 1/3 training the {dataset} models into {out_dir}/ and {subset_dir}/")
    paths = train_many(configs, out_dir, only=only)
    subset = train_many(subset_configs, subset_dir, only=only)
    t_train = time.perf_counter()
    print(f"[{tag}] 2/3 caching embeddings ({t_train - start:.0f}s so far)")
    common = {"data_root": data_root}
    build_caches({display_names[n]: p for n, p in paths.items()}, dataset, splits, **common)
    build_subset_caches({display_names[n]: p for n, p in subset.items()}, dataset, splits, **common)
    t_cache = time.perf_counter()
    print(f"[{tag}] 3/3 running the notebooks ({t_cache - start:.0f}s so far)")
    summary = run_batch(batch, force=force)
    print_summary(summary)
    end = time.perf_counter()
    print(
        f"[{tag}] done in {end - start:.0f}s (training {t_train - start:.0f}s, caching "
        f"{t_cache - t_train:.0f}s, notebooks {end - t_cache:.0f}s); figures in:"
    )
    for folder in sorted({str(Path(f)) for f in summary["figures_dir"]}):
        print(f"  {folder}")
    return 1 if (summary["status"] != "ok").any() else 0


# -- Tiny-ImageNet ------------------------------------------------------------------------
#
# ``make demo-tiny``: the same study on real 64 px RGB photos with 200 classes and object
# boxes, so that notebook 04's CAM-in-box measurements and notebook 05's novel-class
# few-shot / FLUID settings run on ImageNet-like data. ResNet18 keeps its ImageNet stem
# (7x7/2 conv + max-pool): the CIFAR-style ``stem="small"`` keeps 64 px through layer1 and
# costs ~25x as much per step on CPU, too much for a ~10 minute CPU training budget. The
# nesting starts at 4: log2(200) ~ 7.6 dims are needed to tell 200 classes apart linearly, so
# 4 shows the collapse below that and 8 its onset; 1-2 dims would only add loss terms for a
# regime with nothing to measure (NCM at m = 1 is chance by construction, notebook 05).

TINY_DATASET = "tiny-imagenet"
#: Default location of the native ``tiny-imagenet-200`` folder, relative to the repo root.
TINY_DATA_ROOT = Path("../shared/data/tiny-imagenet-200")
TINY_NESTING = [4, 8, 16, 32, 64, 128, 256, 512]
#: One epoch of the four models takes ~10.5 minutes on 2 CPU cores (see run_tiny_imagenet).
TINY_EPOCHS = 1
#: 128 rather than 256: twice the optimizer steps in a one-epoch run, ~10% slower per image.
TINY_BATCH_SIZE = 128
TINY_CHECKPOINT_DIR = Path("data/checkpoints") / TINY_DATASET
#: Pretraining classes of the class-subset models: ``split_classes(class_ids, 100, seed=0)``.
TINY_N_PRETRAIN = 100
TINY_SUBSET_CHECKPOINT_DIR = Path("data/checkpoints") / f"{TINY_DATASET}-{TINY_N_PRETRAIN}"
TINY_BATCH = Path(__file__).parent / "studies" / "tiny-imagenet.yaml"
TINY_DISPLAY_NAMES = {"mrl": "MRL", "ff-512": "FF-512"}


def check_tiny_imagenet(data_root: str | os.PathLike = TINY_DATA_ROOT) -> Path:
    """``data_root`` if it holds Tiny-ImageNet's native layout, else a FileNotFoundError."""
    root = Path(data_root).expanduser()
    missing = [
        p for p in ("wnids.txt", "train", "val/val_annotations.txt") if not (root / p).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"no Tiny-ImageNet at {root} (resolved: {root.absolute()}; missing: "
            f"{', '.join(missing)}). Fix: pass --data-root PATH (or data_root=) naming the "
            "tiny-imagenet-200 folder that holds wnids.txt, words.txt, train/ and val/, or "
            "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it so that "
            f"{TINY_DATA_ROOT} exists relative to the repository root"
        )
    return root


def _tiny_common(epochs: int, data_root: str | os.PathLike) -> dict:
    return {
        "dataset": TINY_DATASET,
        "arch": ARCH,
        "stem": "imagenet",
        "epochs": epochs,
        "batch_size": TINY_BATCH_SIZE,
        "seed": 0,
        "data_root": str(data_root),
    }


def tiny_imagenet_models(
    epochs: int = TINY_EPOCHS, data_root: str | os.PathLike = TINY_DATA_ROOT
) -> dict[str, TrainConfig]:
    """MRL and FF-512 on all 200 Tiny-ImageNet classes (``mrl``, ``ff-512``)."""
    common = _tiny_common(epochs, data_root)
    return {
        "mrl": TrainConfig(kind="mrl", nesting=TINY_NESTING, **common),
        "ff-512": TrainConfig(kind="ff", ff_dim=512, **common),
    }


def tiny_imagenet_novel_class_models(
    epochs: int = TINY_EPOCHS, data_root: str | os.PathLike = TINY_DATA_ROOT
) -> dict[str, TrainConfig]:
    """MRL and FF-512 on ``TINY_N_PRETRAIN`` of the 200 classes, for notebook 05."""
    from mrl_analysis.data.datasets import get_dataset, split_classes

    ids = get_dataset(TINY_DATASET, "val", root=data_root).class_ids
    pretrain, _ = split_classes(ids, TINY_N_PRETRAIN, seed=0)
    common = {**_tiny_common(epochs, data_root), "classes": pretrain}
    return {
        "mrl": TrainConfig(kind="mrl", nesting=TINY_NESTING, **common),
        "ff-512": TrainConfig(kind="ff", ff_dim=512, **common),
    }


def tiny_imagenet_batch(data_root: str | os.PathLike = TINY_DATA_ROOT) -> dict:
    """The packaged Tiny-ImageNet batch as a dict, its ``data_root`` set to ``data_root``."""
    spec = yaml.safe_load(TINY_BATCH.read_text())
    spec.setdefault("defaults", {})["data_root"] = str(data_root)
    return spec


def run_tiny_imagenet(
    data_root: str | os.PathLike = TINY_DATA_ROOT,
    *,
    epochs: int = TINY_EPOCHS,
    only: list[str] | None = None,
    started: float | None = None,
    force: bool = False,
) -> int:
    """``make demo-tiny``: train what is missing, cache embeddings, run the Tiny-ImageNet batch.

    Paths (checkpoints, caches, ``data_root``) are relative to the current directory, which
    is also the batch root: run it from the repository root. On 2 CPU cores training takes
    ~10.5 minutes (one epoch each of MRL / FF-512 on 200 classes, 3.5-4.5 min each, and on
    100 classes, ~1.3 min each), caching ~4.5 minutes, the four notebooks ~2 minutes.
    """
    root = check_tiny_imagenet(data_root)
    print(f"[demo-tiny] data: {root}")
    # train: notebook 01's k-NN database and notebook 05's FLUID pretrain means; val: the rest.
    return _train_cache_run(
        "demo-tiny",
        TINY_DATASET,
        (tiny_imagenet_models(epochs, root), TINY_CHECKPOINT_DIR),
        (tiny_imagenet_novel_class_models(epochs, root), TINY_SUBSET_CHECKPOINT_DIR),
        TINY_DISPLAY_NAMES,
        ["train", "val"],
        tiny_imagenet_batch(root),
        data_root=root,
        only=only,
        started=started,
        force=force,
    )
