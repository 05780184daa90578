"""The demos: train a study's models, cache their embeddings, run its batch.

``make demo`` runs the ``demo`` study (Fashion-MNIST), ``make demo-tiny`` the
``tiny-imagenet`` one (:func:`run_study`); what each trains, caches and runs is its spec in
``mrl_analysis/app/studies/`` (:mod:`mrl_analysis.app.studies`). Each phase (train, cache,
notebooks) prints its time and the run ends with the total: a warm re-run, everything
trained, cached and run already, only checks that and takes seconds.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mrl_analysis.app.batch import did_you_mean
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


def model_stems(study: Study, models: Sequence[str] | None) -> list[str] | None:
    """The checkpoint stems of ``models`` (display names like ``MRL-E`` or stems like
    ``mrl-e``) among the study's models; ``None`` for all. An unknown name is a
    ``ValueError`` listing the study's models, raised before anything is trained or written."""
    if not models:
        return None
    stems = dict(study.models.stems())
    if study.novel_models is not None:
        stems.update(study.novel_models.stems())
    known = {**stems, **{stem: stem for stem in stems.values()}}
    unknown = [name for name in models if name not in known]
    if unknown:
        listed = ", ".join(f"{name} ({stem})" for name, stem in stems.items())
        raise ValueError(
            f"study {study.name!r} has no model named {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], list(known))}; its models (checkpoint stems): {listed}"
        )
    return [known[name] for name in models]


def _phase(tag: str, name: str, seconds: float, detail: str = "") -> None:
    print(f"[{tag}] {name}: done in {seconds:.1f}s{'; ' + detail if detail else ''}", flush=True)


def run_study(
    study: str | os.PathLike | Study = "demo",
    *,
    data_root: str | os.PathLike | None = None,
    epochs: int | None = None,
    models: Sequence[str] | None = None,
    started: float | None = None,
    force: bool = False,
    jobs: int | None = None,
) -> int:
    """Train what is missing (all classes, and the class subset for the novel-class
    analyses), cache every split, run the study's batch; print each phase (train, cache,
    notebooks) with its time, the total and the figure folders. ``data_root`` and
    ``epochs`` replace the spec's; ``models`` (names or stems) limits training and caching
    to those models; ``jobs``: trainings and notebooks run at once (default: one per core;
    :func:`~mrl_analysis.models.training.train_runs`, :func:`~mrl_analysis.app.runner.run_batch`).
    Everything is checked before the first phase starts. Returns the exit status (1 when a
    notebook failed)."""
    from mrl_analysis.app.runner import print_summary, run_batch
    from mrl_analysis.cache.experiment import build_caches, build_subset_caches
    from mrl_analysis.models.training import train_runs

    start = time.perf_counter() if started is None else started
    spec = study if isinstance(study, Study) else load_study(study)
    tag = spec.name
    if spec.dataset == "tiny-imagenet":
        data_root = check_tiny_imagenet(data_root or spec.data_root).absolute()
        print(f"[{tag}] data: {data_root}")
    root = data_root if data_root is not None else spec.data_root
    stems = model_stems(spec, models)
    model_sets = [(spec.models, spec.train_configs(epochs=epochs, data_root=root))]
    if spec.novel_models is not None:
        novel = spec.train_configs(novel=True, epochs=epochs, data_root=root)
        model_sets.append((spec.novel_models, novel))

    folders = " and ".join(f"{model_set.checkpoints}/" for model_set, _ in model_sets)
    print(f"[{tag}] train: the {spec.dataset} models into {folders} (those missing)")
    t0 = time.perf_counter()
    trained, runs = [], {}
    for model_set, configs in model_sets:
        paths = {n: model_set.checkpoints / f"{n}.pt" for n in configs if not stems or n in stems}
        trained.append((model_set, paths))
        runs.update({path: configs[n] for n, path in paths.items()})
    # One pool for both sets: the class-subset models fill the cores the others leave.
    train_runs(runs, jobs=jobs)
    t_train = time.perf_counter()
    _phase(tag, "train", t_train - t0, f"{sum(len(p) for _, p in trained)} model(s) ready")

    print(f"[{tag}] cache: embeddings of {', '.join(spec.cache_splits)} into {spec.cache_root}/")
    common = {"cache_root": spec.cache_root, "data_root": root}
    splits = list(spec.cache_splits)
    for i, (model_set, paths) in enumerate(trained):
        display = {stem: name for name, stem in model_set.stems().items()}
        named = {display[stem]: path for stem, path in paths.items()}
        # The class-subset models embed every class: their caches hold the novel ones too.
        build = build_caches if i == 0 else build_subset_caches
        build(named, spec.dataset, splits, **common)
    t_cache = time.perf_counter()
    _phase(tag, "cache", t_cache - t_train)

    print(f"[{tag}] notebooks: the study's batch (unchanged ones are reused)")
    summary = run_batch(spec.batch_spec(data_root=root), force=force, jobs=jobs)
    print_summary(summary)
    end = time.perf_counter()
    reused = int(summary["reused"].sum()) if "reused" in summary else 0
    _phase(tag, "notebooks", end - t_cache, f"{len(summary) - reused} run, {reused} reused")
    print(
        f"[{tag}] total {end - start:.1f}s (start-up {t0 - start:.1f}s, train "
        f"{t_train - t0:.1f}s, cache {t_cache - t_train:.1f}s, notebooks "
        f"{end - t_cache:.1f}s); figures in:"
    )
    for folder in sorted({str(Path(f)) for f in summary["figures_dir"]}):
        print(f"  {folder}")
    _print_findings(tag, summary)
    return 1 if (summary["status"] != "ok").any() else 0


def _print_findings(tag: str, summary: pd.DataFrame) -> None:
    """End with the paper's findings on these models: the table notebook 07 saved."""
    from mrl_analysis.findings.headlines import findings_text

    ok = summary[summary["status"] == "ok"]
    for path in (Path(folder) / "findings.csv" for folder in ok["figures_dir"]):
        if path.is_file():
            print(f"[{tag}] the paper's findings on these models ({path}):")
            print(textwrap.indent(findings_text(pd.read_csv(path)), "  "))
