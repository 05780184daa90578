"""The demos: train a study's models, cache their embeddings, run its batch.

``make demo`` runs the ``demo`` study (Fashion-MNIST), ``make demo-tiny`` the
``tiny-imagenet`` one; what each trains, caches and runs is its spec in
``mrl_analysis/app/studies/`` (:mod:`mrl_analysis.app.studies`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from mrl_analysis.app.studies import Study, load_study

#: The download a missing Tiny-ImageNet folder comes from.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def check_tiny_imagenet(data_root: str | os.PathLike | None = None) -> Path:
    """``data_root`` (default: the study's) if it holds Tiny-ImageNet's native layout, else a
    FileNotFoundError naming the path and the fix."""
    default = load_study("tiny-imagenet").data_root
    root = Path(data_root).expanduser() if data_root is not None else default
    missing = [
        p for p in ("wnids.txt", "train", "val/val_annotations.txt") if not (root / p).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"no Tiny-ImageNet at {root} (resolved: {root.absolute()}; missing: "
            f"{', '.join(missing)}). Fix: pass --data-root PATH (or data_root=) naming the "
            "tiny-imagenet-200 folder that holds wnids.txt, words.txt, train/ and val/, or "
            f"download {TINY_IMAGENET_URL} and unzip it so that {default} exists"
        )
    return root


def _only_stems(study: Study, only: Sequence[str] | None) -> list[str] | None:
    """``--only`` names models by checkpoint stem (``mrl-e``) or display name (``MRL-E``)."""
    if not only:
        return None
    stems = {**study.models.stems()}
    if study.novel_models is not None:
        stems.update(study.novel_models.stems())
    return [stems.get(name, name) for name in only]


def run_study(
    study: str | os.PathLike | Study = "demo",
    *,
    data_root: str | os.PathLike | None = None,
    epochs: int | None = None,
    only: Sequence[str] | None = None,
    started: float | None = None,
    force: bool = False,
) -> int:
    """Train what is missing (all classes, and the class subset for the novel-class
    analyses), cache every split, run the study's batch; print the timings and figure
    folders. ``data_root`` and ``epochs`` replace the spec's. Returns the exit status."""
    from mrl_analysis.app.runner import print_summary, run_batch
    from mrl_analysis.cache.experiment import build_caches, build_subset_caches
    from mrl_analysis.models.training import train_many

    spec = study if isinstance(study, Study) else load_study(study)
    tag = spec.name
    start = time.perf_counter() if started is None else started
    root = data_root if data_root is not None else spec.data_root
    stems = _only_stems(spec, only)
    model_sets = [(spec.models, spec.train_configs(epochs=epochs, data_root=root))]
    if spec.novel_models is not None:
        novel = spec.train_configs(novel=True, epochs=epochs, data_root=root)
        model_sets.append((spec.novel_models, novel))
    folders = " and ".join(f"{models.checkpoints}/" for models, _ in model_sets)
    print(f"[{tag}] 1/3 training the {spec.dataset} models into {folders}")
    trained = [
        (models, train_many(configs, models.checkpoints, only=stems))
        for models, configs in model_sets
    ]
    t_train = time.perf_counter()
    print(f"[{tag}] 2/3 caching embeddings ({t_train - start:.0f}s so far)")
    common = {"cache_root": spec.cache_root, "data_root": root}
    splits = list(spec.cache_splits)
    for i, (models, paths) in enumerate(trained):
        display = {stem: name for name, stem in models.stems().items()}
        named = {display[stem]: path for stem, path in paths.items()}
        # The class-subset models embed every class: their caches hold the novel ones too.
        build = build_caches if i == 0 else build_subset_caches
        build(named, spec.dataset, splits, **common)
    t_cache = time.perf_counter()
    print(f"[{tag}] 3/3 running the notebooks ({t_cache - start:.0f}s so far)")
    summary = run_batch(spec.batch_spec(data_root=root), force=force)
    print_summary(summary)
    end = time.perf_counter()
    print(
        f"[{tag}] done in {end - start:.0f}s (training {t_train - start:.0f}s, caching "
        f"{t_cache - t_train:.0f}s, notebooks {end - t_cache:.0f}s); figures in:"
    )
    for folder in sorted({str(Path(f)) for f in summary["figures_dir"]}):
        print(f"  {folder}")
    return 1 if (summary["status"] != "ok").any() else 0


def run_demo(
    *,
    epochs: int | None = None,
    only: Sequence[str] | None = None,
    started: float | None = None,
    force: bool = False,
) -> int:
    """``make demo``: the ``demo`` study (Fashion-MNIST)."""
    return run_study("demo", epochs=epochs, only=only, started=started, force=force)


def run_tiny_imagenet(
    data_root: str | os.PathLike | None = None,
    *,
    epochs: int | None = None,
    only: Sequence[str] | None = None,
    started: float | None = None,
    force: bool = False,
) -> int:
    """``make demo-tiny``: the ``tiny-imagenet`` study, its data checked first.

    ``data_root`` (default: the spec's, relative to the project root) is the native
    ``tiny-imagenet-200`` folder; a relative one given here is relative to the current
    directory.
    """
    root = check_tiny_imagenet(data_root).absolute()
    print(f"[tiny-imagenet] data: {root}")
    return run_study(
        "tiny-imagenet", data_root=root, epochs=epochs, only=only, started=started, force=force
    )
