"""Building caches: run models once over a dataset split and keep their outputs on disk.

:func:`embed_dataset` caches one model's features and logits; :func:`embed_many` caches
several (models, or views of the same inputs such as horizontally flipped ones) in **one
pass over the data**, so that every image is read, decoded and transformed once for all
of them. Extraction goes chunk by chunk (resumable), then the final arrays are assembled
and installed atomically; see :mod:`mrl_analysis.cache.store` for the layout on disk,
reuse, staleness and crash safety. On the CPU the models run with NHWC (``channels_last``)
convolutions, 1.75x as fast as NCHW on AVX2-only machines; the outputs agree with an NCHW
forward pass to ~1e-6 of their scale.

Before any work, a model's recorded classes (``model.meta["classes"]``, else its
``class_names``) must be the bundle's, in the same order: a model trained on other classes
would otherwise be scored against the wrong heads. A model trained on a subset of the
bundle's classes declares which label each output stands for (``logit_classes=``), and a
split restricted to some of the model's classes (``bundle.class_subset_indices``,
ImageNet-A / -R) is allowed as it is.

Distributed. Under ``torchrun --nproc_per_node=N`` (see :mod:`mrl_analysis.core.dist`)
every process calls the same function: rank 0 takes the cache locks and plans the chunks
still to compute, every rank embeds a contiguous block of them into the shared chunk
folder, and rank 0 assembles and installs the caches, which are the same (same manifest
apart from ``build``, same sample order, bit-identical arrays on CPU) as a single process
makes. The cache folder must be on a filesystem every node sees. A killed rank or job
resumes from the finished chunks, as a single process does.

Disk space. Chunks are written with ordinary writes and the final arrays without memory
mapping, with their space reserved first (``posix_fallocate``), so a full disk (or a file
size limit) is one :class:`~mrl_analysis.cache.store.DiskFullError` naming the path, never
a SIGBUS; finished chunks stay for a resume and temporary files are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mrl_analysis.cache.reader import EmbeddingCache, open_cache
from mrl_analysis.cache.store import (
    FORMAT,
    MANIFEST,
    CacheCorruptedError,
    FeaturesDtype,
    NpyWriter,
    cache_provenance,
    check_replaceable,
    checkpoint_hash,
    class_subset,
    describe,
    disk_space_guard,
    fsync_dir,
    fsync_file,
    hash_json,
    install,
    locked,
    remove_leftovers,
    sibling,
    write_array,
    write_manifest,
)
from mrl_analysis.core import dist
from mrl_analysis.core.checks import check_finite, check_int
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.versions import library_versions

logger = logging.getLogger(__name__)

_FLOAT16_MAX = float(np.finfo(np.float16).max)
# Ranks wait for each other's shards and for rank 0's assembly; torchrun stops the job if a
# rank dies, so the wait only needs to outlast the slowest shard.
_DIST_TIMEOUT = timedelta(hours=6)
_T = TypeVar("_T")


class ClassMismatchError(ValueError):
    """A model's outputs stand for other classes than the dataset's labels."""


@dataclass(frozen=True)
class EmbedTarget:
    """One cache that :func:`embed_many` writes: a model's outputs over the pass's samples.

    ``bundle`` (default: the pass's) is what the cache describes: its provenance,
    transform and classes. With ``view``, the model sees ``view(batch)`` of each batch the
    pass loads, and ``bundle`` must be the dataset whose items are exactly those views of
    the pass's items (e.g. the pass's transform followed by a horizontal flip, and
    ``view`` the flip itself): the pass cannot check that promise, only the sample count,
    labels and ids. ``model_id`` and ``logit_classes`` are as in :func:`embed_dataset`.
    """

    model: nn.Module
    cache_dir: str | os.PathLike
    model_id: str | None = None
    logit_classes: Sequence[int] | None = None
    bundle: Any = None
    view: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class _Job:
    """An :class:`EmbedTarget` resolved: where it goes, its key, what is left to compute."""

    target: EmbedTarget
    bundle: Any
    cache_dir: Path
    provenance: dict[str, Any]
    key: str
    hash_source: str
    logit_classes: list[int] | None
    head_params: tuple[np.ndarray, np.ndarray] | None
    pending: list[int] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return sibling(self.cache_dir, f"partial-{self.key[:16]}")

    @property
    def name(self) -> str:
        return self.target.model_id or self.cache_dir.parent.name


# --------------------------------------------------------------------- extraction


def _model_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Features ``[N, d]`` → stacked logits ``[G, N, C]`` without rerunning the backbone."""
    head = getattr(model, "fc", None)
    if isinstance(head, nn.Module):
        return head
    return lambda feats: torch.stack([model.logits_at(feats, m) for m in model.nesting])


def _mrle_head(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    clf = getattr(getattr(model, "fc", None), "nesting_classifier_0", None)
    if not isinstance(clf, nn.Linear):
        raise ValueError(
            "an MRL-E model must expose its shared classifier as model.fc.nesting_classifier_0 "
            "(an nn.Linear), so that the cache can store it for logits_at at any size"
        )
    weight = clf.weight.detach().float().cpu().numpy()
    bias = clf.bias.detach().float().cpu().numpy()
    return weight, bias


def _model_device(model: nn.Module, device: torch.device | None) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    model.to(device)
    return device


def _chunk_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.npz"


def _save_chunk(path: Path, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    features = np.concatenate([p[0] for p in parts])
    finite = np.abs(features[np.isfinite(features)])
    tmp = path.with_name(path.name + ".tmp")
    try:
        with disk_space_guard(path, resume_from=path.parent), open(tmp, "wb") as fh:
            np.savez(
                fh,
                features=features,
                logits=np.concatenate([p[1] for p in parts], axis=1),
                labels=np.concatenate([p[2] for p in parts]),
                absmax=np.float64(finite.max(initial=0.0)),
            )
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written chunk only takes space
        raise
    os.replace(tmp, path)


def _read_plan(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _prepare_work(work: Path, plan: dict[str, Any], num_chunks: int) -> list[int]:
    """Set up ``work`` for ``plan``; returns the chunks it does not hold yet."""
    plan_file = work / "plan.json"
    if work.exists() and _read_plan(plan_file) != plan:
        shutil.rmtree(work)  # laid out for another chunk size: its chunks do not line up
    work.mkdir(exist_ok=True)
    for stale in work.glob("*.tmp"):
        stale.unlink()  # a chunk being written when its process was killed
    tmp = plan_file.with_name("plan.json.tmp")
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, plan_file)
    return [i for i in range(num_chunks) if not _chunk_file(work, i).exists()]


def _extract(
    jobs: Sequence[_Job],
    dataset: Any,
    bounds: Sequence[tuple[int, int]],
    chunks: Sequence[int],
    *,
    batch_size: int,
    device: torch.device | None,
    num_workers: int,
    progress: bool,
    rank: str,
) -> None:
    """Embed ``chunks`` (indices into ``bounds``) for every job that still needs them;
    ``rank`` is appended to the progress bar's name."""
    if not chunks:
        return
    needed = {id(job): set(job.pending) for job in jobs}
    devices = {id(job): _model_device(job.target.model, device) for job in jobs}
    heads = {id(job): _model_head(job.target.model) for job in jobs}
    # Batches never straddle a chunk, so every chunk is written as soon as it is complete.
    batches = [
        list(range(b, min(b + batch_size, bounds[i][1])))
        for i in chunks
        for b in range(bounds[i][0], bounds[i][1], batch_size)
    ]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=any(d.type == "cuda" for d in devices.values()),
    )
    todo = iter(chunks)
    current = next(todo)
    parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {id(j): [] for j in jobs}
    filled = 0
    names = ", ".join(dict.fromkeys(job.name for job in jobs))
    total = sum(bounds[i][1] - bounds[i][0] for i in chunks)
    with (
        torch.inference_mode(),
        progress_bar(
            total=total, desc=f"embed · {names}{rank}", unit="img", leave=True, disable=not progress
        ) as bar,
    ):
        for batch in loader:
            images, labels = batch[0], batch[1]
            labels = torch.as_tensor(labels).numpy().astype(np.int64)
            for job in jobs:
                if current not in needed[id(job)]:
                    continue
                parts[id(job)].append(_forward(job, images, labels, devices, heads))
            filled += len(images)
            bar.update(len(images))
            start, end = bounds[current]
            if filled == end - start:
                for job in jobs:
                    if current in needed[id(job)]:
                        _save_chunk(_chunk_file(job.work, current), parts[id(job)])
                        parts[id(job)] = []
                filled = 0
                current = next(todo, -1)


def _forward(
    job: _Job,
    images: torch.Tensor,
    labels: np.ndarray,
    devices: dict[int, torch.device],
    heads: dict[int, Callable[[torch.Tensor], torch.Tensor]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model = job.target.model
    x = images if job.target.view is None else job.target.view(images)
    device = devices[id(job)]
    if x.dim() == 4 and device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)  # as the model is (_extract_all)
    feats = model.embed(x.to(device, non_blocking=True))
    logits = heads[id(job)](feats)
    G = len(model.nesting)
    if feats.dim() != 2 or tuple(logits.shape[:2]) != (G, len(images)):
        raise ValueError(
            f"model.embed gave {tuple(feats.shape)} and the head {tuple(logits.shape)} "
            f"for a batch of {len(images)}: expected [N, d] and [{G}, N, C] "
            f"(one logits row per nesting size {list(model.nesting)})"
        )
    features, logits = feats.float().cpu().numpy(), logits.float().cpu().numpy()
    # A cache of NaN would mislead every analysis that reads it: refuse it here, once.
    where = f"a batch of {job.name} on {job.cache_dir.name}"
    check_finite(features, f"the features of {where}")
    check_finite(logits, f"the logits of {where}")
    return features, logits, labels


# ----------------------------------------------------------------------- assembly


def _assemble(
    work: Path,
    tmp: Path,
    bounds: list[tuple[int, int]],
    *,
    features_dtype: str,
    sample_ids: list[str],
    targets: np.ndarray | None,
    head_params: tuple[np.ndarray, np.ndarray] | None,
    class_subset: np.ndarray | None,
) -> dict[str, Any]:
    """Write the final arrays into ``tmp``; returns the precision report for the manifest."""
    n = bounds[-1][1]
    chunks = [_chunk_file(work, i) for i in range(len(bounds))]
    absmax = 0.0
    for chunk in chunks:
        with np.load(chunk) as z:
            absmax = max(absmax, float(z["absmax"]))
    with np.load(chunks[0]) as z:
        d = z["features"].shape[1]
        G, _, C = z["logits"].shape
    if class_subset is not None and (class_subset.min() < 0 or class_subset.max() >= C):
        raise ValueError(
            f"bundle.class_subset_indices go up to {class_subset.max()} but the model has {C} "
            "outputs: the subset must index the model's classes"
        )
    outside = None if class_subset is None else np.setdiff1d(np.arange(C), class_subset)
    fits = features_dtype == "float16" and absmax <= _FLOAT16_MAX
    dtype = np.float16 if fits else np.float32

    tmp.mkdir()
    labels = np.empty(n, dtype=np.int64)
    cast_error = 0.0
    with (
        NpyWriter(tmp / "features.npy", dtype, (n, d)) as features,
        NpyWriter(tmp / "logits.npy", np.float32, (G, n, C)) as logits,
    ):
        for (start, end), chunk in zip(bounds, chunks, strict=True):
            with np.load(chunk) as z:
                exact = z["features"]
                stored = exact.astype(dtype)
                features.write((start, 0), stored)
                if fits:
                    diff = np.abs(stored.astype(np.float32) - exact)
                    cast_error = max(cast_error, float(np.nanmax(diff, initial=0.0)))
                block = z["logits"]
                if outside is not None:
                    block[:, :, outside] = -np.inf
                for g in range(G):
                    logits.write((g, start, 0), block[g])
                labels[start:end] = z["labels"]
    if targets is not None and not np.array_equal(labels, targets):
        bad = int(np.flatnonzero(labels != targets)[0])
        raise ValueError(
            f"bundle.targets disagree with the labels bundle.dataset yields (first at index "
            f"{bad}: {targets[bad]} vs {labels[bad]}); fix the bundle so that they match"
        )
    write_array(tmp, "labels", labels)
    width = max((len(s) for s in sample_ids), default=1) or 1
    write_array(tmp, "sample_ids", np.asarray(sample_ids, dtype=f"<U{width}"))
    if head_params is not None:
        write_array(tmp, "head_weight", head_params[0])
        write_array(tmp, "head_bias", head_params[1])
    return {
        "features_dtype": np.dtype(dtype).name,
        "features_dtype_requested": features_dtype,
        "features_max_abs": absmax,
        "features_float16_max_abs_error": cast_error if fits else None,
        "logits_dtype": "float32",
    }


# ------------------------------------------------------------------------ classes


def _model_classes(model: nn.Module) -> tuple[str, list[str]] | None:
    """What ``model`` says its outputs stand for: ``("class ids" | "class names", list)``."""
    meta = getattr(model, "meta", None) or {}
    if meta.get("classes"):
        return "class ids", [str(c) for c in meta["classes"]]
    if meta.get("dataset") == "imagenet" and getattr(model, "num_classes", None) == 1000:
        from mrl_analysis.data.wordnet import imagenet1k_classes

        # The authors' releases (and torchvision's ImageNet weights) record no ids but list
        # the 1000 classes in the standard sorted-wnid order, which the ImageNet bundles use.
        return "class ids", [wnid for wnid, _ in imagenet1k_classes()]
    names = getattr(model, "class_names", None)
    if names:
        return "class names", [str(c) for c in names]
    return None


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in items[:8])
    return f"[{shown}{f', … {len(items) - 8} more' if len(items) > 8 else ''}]"


def _class_difference(model_classes: list[str], data_classes: list[str]) -> str:
    theirs, ours = set(data_classes), set(model_classes)
    only_model = [c for c in model_classes if c not in theirs]
    only_data = [c for c in data_classes if c not in ours]
    parts = []
    if only_model:
        parts.append(f"the model's {_listed(only_model)} are not in the dataset")
    if only_data:
        parts.append(f"the dataset's {_listed(only_data)} are not among the model's outputs")
    if not parts and len(model_classes) != len(data_classes):
        parts.append(f"{len(model_classes)} outputs for {len(data_classes)} classes")
    if not parts:
        pairs = enumerate(zip(model_classes, data_classes, strict=True))
        i = next(i for i, (a, b) in pairs if a != b)
        parts.append(
            f"the same classes in another order (output {i} is {model_classes[i]!r}, "
            f"label {i} is {data_classes[i]!r})"
        )
    return "; ".join(parts)


def _check_classes(
    model: nn.Module,
    bundle: Any,
    logit_classes: list[int] | None,
    *,
    outputs: int | None,
    what: str,
) -> None:
    """Refuse a model whose outputs are not the bundle's classes (module docstring).

    ``outputs`` is the model's number of outputs where known (before extraction, from
    ``model.num_classes``; after it, from the logits)."""
    fix = (
        "Embed it on the data it was trained on, or, for a model trained on a subset of "
        "these classes, declare the label of each output with logit_classes= "
        "(build_subset_caches does this for class-subset models)"
    )
    recorded = _model_classes(model)
    ids = getattr(bundle, "class_ids", None)
    names = getattr(bundle, "class_names", None)
    data = None
    if recorded is not None:
        data = ids if recorded[0] == "class ids" else names
        data = None if not data else [str(c) for c in data]
    count = len(ids or names or []) or None
    if logit_classes is not None:
        if count is not None and max(logit_classes) >= count:
            raise ValueError(
                f"logit_classes {logit_classes} must be labels of the bundle's {count} classes "
                f"(0..{count - 1})"
            )
        if outputs is not None and len(logit_classes) != outputs:
            raise ValueError(
                f"logit_classes {logit_classes} must give one label of the bundle's "
                f"{count} classes to each of the model's {outputs} outputs"
            )
        if recorded is not None and data is not None:
            declared = [data[c] for c in logit_classes]
            if len(recorded[1]) != len(declared):
                wrong = [f"{len(declared)} labels for {len(recorded[1])} recorded classes"]
            else:
                wrong = [
                    f"output {j}: {m!r} vs label {c} {d!r}"
                    for j, (m, c, d) in enumerate(
                        zip(recorded[1], logit_classes, declared, strict=True)
                    )
                    if m != d
                ]
            if wrong:
                raise ClassMismatchError(
                    f"logit_classes disagree with the {recorded[0]} {what} records "
                    f"({'; '.join(wrong[:5])}): give each output the label of the class it "
                    "was trained on"
                )
        return
    if recorded is not None and data is not None:
        if recorded[1] != data:
            raise ClassMismatchError(
                f"{what} was trained on other classes than the dataset's ({recorded[0]}): "
                f"{_class_difference(recorded[1], data)}. Its logits would be scored against "
                f"the wrong classes. {fix}"
            )
        return
    if outputs is not None and count is not None and outputs != count:
        raise ClassMismatchError(
            f"{what} has {outputs} outputs but the dataset has {count} classes, and the "
            f"model records no class list to match them by. {fix}"
        )


# ----------------------------------------------------------------------- public API


def embed_dataset(
    model: nn.Module,
    bundle: Any,
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 256,
    chunk_size: int = 4096,
    num_workers: int = 0,
    model_id: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    features_dtype: FeaturesDtype = "float16",
    logit_classes: Sequence[int] | None = None,
    distributed: bool | None = None,
) -> EmbeddingCache:
    """Run ``model`` once over ``bundle.dataset`` and cache features and logits on disk.

    ``model`` follows the model contract (``nesting``, ``kind``, ``embed``, ``logits_at``,
    ``meta``; see ``docs/architecture.md``); ``bundle`` is a ``DatasetBundle`` or any
    object with ``dataset`` and ``fingerprint`` (``targets``, ``class_names``,
    ``class_ids``, ``hierarchy``, ``sample_ids``, ``transform``, ``split``, ``name`` are
    used when present). If ``cache_dir`` already holds a cache with the same provenance
    it is returned once its checksums match (a damaged cache is rebuilt, with a warning);
    otherwise it is (re)computed, resuming an interrupted run from its finished chunks,
    and swapped in atomically. A ``cache_dir`` holding anything but a cache (say, your own
    ``features.npy``) is never replaced. Batches never straddle a chunk, so keep
    ``chunk_size`` a multiple of ``batch_size``. ``device`` (default: where the model is)
    moves the model there; ``"auto"`` picks this process's GPU when there is one.
    ``model_id`` is a label for the manifest (default: from ``model.meta`` or the
    config); it does not affect staleness. ``features_dtype`` ``"float32"`` stores
    features exactly (``"float16"`` falls back to it by itself when a value is out of
    float16's range). Processes asking for the same ``cache_dir`` at once wait for the
    first one and then reuse its result.

    The model's recorded classes must be the bundle's (:class:`ClassMismatchError`
    otherwise, naming the differing classes). ``logit_classes`` declares a model trained
    on a subset of the bundle's classes: the bundle label each logit column stands for
    (one per model output); the manifest records it as ``logit_classes``. It comes from
    the checkpoint and the bundle, which the cache key covers, so it does not affect
    staleness.

    ``distributed`` (default: when started by torchrun) shares the work among the
    processes of a ``torch.distributed`` group; every process must make the same call
    (module docstring). False builds the whole cache in this process.
    """
    target = EmbedTarget(model, cache_dir, model_id=model_id, logit_classes=logit_classes)
    return embed_many(
        bundle,
        [target],
        batch_size=batch_size,
        chunk_size=chunk_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
        features_dtype=features_dtype,
        distributed=distributed,
    )[0]


def embed_many(
    bundle: Any,
    targets: Sequence[EmbedTarget],
    *,
    batch_size: int = 256,
    chunk_size: int = 4096,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    features_dtype: FeaturesDtype = "float16",
    distributed: bool | None = None,
) -> list[EmbeddingCache]:
    """:func:`embed_dataset` for several targets in one pass over ``bundle.dataset``.

    Each :class:`EmbedTarget` is a model (and optionally a view of the inputs, such as
    a horizontal flip) with its own cache folder; caches already up to date are reused,
    and each batch is loaded once and run through every model whose cache still needs
    it. Returns the caches in the order of ``targets``. Options are as in
    :func:`embed_dataset` and apply to every target.
    """
    for what, value in {"batch_size": batch_size, "chunk_size": chunk_size}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if features_dtype not in ("float16", "float32"):
        raise ValueError(f"features_dtype must be 'float16' or 'float32', not {features_dtype!r}")
    if not targets:
        raise ValueError("no targets given: pass at least one EmbedTarget(model, cache_dir)")
    if not hasattr(bundle, "dataset"):
        raise ValueError("bundle has no .dataset: pass a DatasetBundle (see get_dataset)")
    n = len(bundle.dataset)
    if n == 0:
        raise ValueError("bundle.dataset is empty: nothing to embed")
    jobs = _jobs(bundle, targets, features_dtype, n)
    if distributed is None:
        distributed = dist.launched() or dist.is_distributed()
    # Outside torchrun there is no group to join: the build is this process's alone.
    distributed = distributed and dist.init(timeout=_DIST_TIMEOUT)
    world, rank = (dist.world_size(), dist.rank()) if distributed else (1, 0)
    main = rank == 0
    device = None if device is None else dist.local_device(device)
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    plan = {"num_samples": n, "chunk_size": chunk_size}

    with ExitStack() as locks:
        if main:
            # One order for every builder, so two of them locking overlapping sets of
            # caches cannot each hold one lock the other waits for.
            for job in sorted(jobs, key=lambda j: str(j.cache_dir)):
                job.cache_dir.parent.mkdir(parents=True, exist_ok=True)
                locks.enter_context(locked(sibling(job.cache_dir, "lock"), job.cache_dir))
        pending = _on_main(
            distributed,
            "planning the chunks",
            lambda: [_plan(job, {**plan, "key": job.key}, len(bounds)) for job in jobs],
        )
        for job, chunks in zip(jobs, pending, strict=True):
            job.pending = [] if chunks is None else chunks
        building = [job for job, chunks in zip(jobs, pending, strict=True) if chunks is not None]
        if building:
            started = time.perf_counter()
            union = sorted(set().union(*(job.pending for job in building)))
            mine = [int(i) for i in np.array_split(np.asarray(union, dtype=np.int64), world)[rank]]
            _everywhere(
                distributed,
                "embedding",
                lambda: _extract_all(
                    building,
                    bundle.dataset,
                    bounds,
                    mine,
                    batch_size=batch_size,
                    device=device,
                    num_workers=num_workers,
                    progress=progress,
                    rank=f" (rank {rank} of {world})" if distributed else "",
                ),
            )
            build = {
                "batch_size": batch_size,
                "chunk_size": chunk_size,
                "num_chunks": len(bounds),
                "processes": world,
                "device": str(device or _model_device(building[0].target.model, None)),
                "shared_pass": len(building),
                "seconds": round(time.perf_counter() - started, 3),
            }
            _on_main(
                distributed,
                "assembling the caches",
                lambda: [
                    _finish(job, bounds, features_dtype=features_dtype, build=build)
                    for job in building
                ],
            )
    return [open_cache(job.cache_dir) for job in jobs]


def _jobs(bundle: Any, targets: Sequence[EmbedTarget], features_dtype: str, n: int) -> list[_Job]:
    """Resolve and check every target before any work (each rank does the same)."""
    ids, labels = getattr(bundle, "sample_ids", None), getattr(bundle, "targets", None)
    hashes: dict[int, tuple[str, str]] = {}
    jobs: list[_Job] = []
    for target in targets:
        own = bundle if target.bundle is None else target.bundle
        if target.view is not None and target.bundle is None:
            raise ValueError(
                "an EmbedTarget with a view needs the bundle the view makes (its transform and "
                "fingerprint are the cache's provenance)"
            )
        if len(own.dataset) != n:
            raise ValueError(
                f"the bundle of {target.cache_dir} has {len(own.dataset)} samples, the pass {n}"
            )
        own_ids, own_labels = getattr(own, "sample_ids", None), getattr(own, "targets", None)
        if own_ids is not None and len(own_ids) != n:
            raise ValueError(f"bundle.sample_ids has {len(own_ids)} ids for {n} samples")
        if own is not bundle and (
            (ids is not None and own_ids is not None and list(own_ids) != list(ids))
            or (
                labels is not None
                and own_labels is not None
                and not np.array_equal(own_labels, labels)
            )
        ):
            raise ValueError(
                f"the bundle of {target.cache_dir} lists other samples or labels than the "
                "pass's: a view must keep the samples and their order"
            )
        logit_classes = target.logit_classes
        if logit_classes is not None:
            logit_classes = [check_int(c, "logit_classes entry", low=0) for c in logit_classes]
            if len(set(logit_classes)) != len(logit_classes):
                raise ValueError(f"logit_classes must be distinct labels, got {logit_classes}")
        model = target.model
        _check_classes(
            model,
            own,
            logit_classes,
            outputs=getattr(model, "num_classes", None),
            what=f"the model for {target.cache_dir}",
        )
        if id(model) not in hashes:
            hashes[id(model)] = checkpoint_hash(model)
        sha, source = hashes[id(model)]
        provenance = cache_provenance(model, own, features_dtype, sha)
        jobs.append(
            _Job(
                target=target,
                bundle=own,
                cache_dir=Path(target.cache_dir),
                provenance=provenance,
                key=hash_json(provenance),
                hash_source=source,
                logit_classes=logit_classes,
                head_params=_mrle_head(model) if model.kind == "mrl-e" else None,
            )
        )
    dirs = [job.cache_dir.resolve() for job in jobs]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"two targets share a cache_dir: {[str(d) for d in dirs]}")
    return jobs


def _plan(job: _Job, plan: dict[str, Any], num_chunks: int) -> list[int] | None:
    """None when ``job``'s cache is up to date, else the chunks it still needs (rank 0)."""
    if _current_cache(job.cache_dir, job.provenance, job.key) is not None:
        return None
    check_replaceable(job.cache_dir)
    remove_leftovers(job.cache_dir, keep=job.work)
    return _prepare_work(job.work, plan, num_chunks)


def _extract_all(
    jobs: Sequence[_Job],
    dataset: Any,
    bounds: Sequence[tuple[int, int]],
    chunks: Sequence[int],
    **options: Any,
) -> None:
    models = {id(job.target.model): job.target.model for job in jobs}
    modes = {key: model.training for key, model in models.items()}
    # NHWC convolutions on the CPU: 1.75x the images per second of NCHW with AVX2 only,
    # 1.1x with AVX-512 (benchmarks/bench_cache_phase.py; outputs agree to ~1e-6).
    nhwc = {
        key: model
        for key, model in models.items()
        if _model_device(model, options["device"]).type == "cpu" and not _channels_last(model)
    }
    for model in models.values():
        model.eval()
    for model in nhwc.values():
        model.to(memory_format=torch.channels_last)
    try:
        _extract(jobs, dataset, bounds, chunks, **options)
    finally:
        for key, model in models.items():
            model.train(modes[key])
            if key in nhwc:
                model.to(memory_format=torch.contiguous_format)


def _channels_last(model: nn.Module) -> bool:
    """Whether the model's 4-d weights (its convolutions) are laid out NHWC already."""
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )


def _finish(
    job: _Job, bounds: list[tuple[int, int]], *, features_dtype: str, build: dict[str, Any]
) -> None:
    """Assemble ``job``'s chunks into its cache and install it (rank 0, locks held)."""
    missing = [i for i in range(len(bounds)) if not _chunk_file(job.work, i).exists()]
    if missing:
        raise FileNotFoundError(
            f"chunks {missing[:5]} of {job.cache_dir} are missing from {job.work} after every "
            "process finished: under torchrun on several machines the cache folder must be on "
            "a filesystem all of them share"
        )
    sample_ids = getattr(job.bundle, "sample_ids", None)
    n = bounds[-1][1]
    sample_ids = [f"index/{i}" for i in range(n)] if sample_ids is None else list(sample_ids)
    targets = getattr(job.bundle, "targets", None)
    tmp = sibling(job.cache_dir, f"tmp-{job.key[:16]}-{os.getpid()}")
    try:
        with disk_space_guard(tmp, resume_from=job.work):
            precision = _assemble(
                job.work,
                tmp,
                bounds,
                features_dtype=features_dtype,
                sample_ids=sample_ids,
                targets=None if targets is None else np.asarray(targets, dtype=np.int64),
                head_params=job.head_params,
                class_subset=class_subset(job.bundle),
            )
            manifest = _manifest(
                tmp,
                job,
                precision=precision,
                build={**build, "chunks_resumed": len(bounds) - len(job.pending)},
            )
            for name in manifest["arrays"]:
                fsync_file(tmp / manifest["arrays"][name]["file"])
            write_manifest(tmp, manifest)
        fsync_dir(tmp)
        install(tmp, job.cache_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(job.work, ignore_errors=True)


def _on_main(distributed: bool, what: str, work: Callable[[], _T]) -> _T:
    """``work()`` on rank 0, its result on every rank; a failure is raised on every rank."""
    if not distributed:
        return work()
    result, error = None, None
    if dist.is_main():
        try:
            result = work()
        except Exception as exc:
            error = exc
    message = None if error is None else f"{type(error).__name__}: {error}"
    result, message = dist.broadcast_object((result, message))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed while {what}: {message}")
    return result


def _everywhere(distributed: bool, what: str, work: Callable[[], None]) -> None:
    """``work()`` on every rank; once all are done, any rank's failure is raised on all."""
    if not distributed:
        work()
        return
    error = None
    try:
        work()
    except Exception as exc:
        error = exc
    message = None if error is None else f"{type(error).__name__}: {error}"
    messages = dist.all_gather_objects(message)
    if error is not None:
        raise error
    failed = [f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None]
    if failed:
        raise RuntimeError(f"{what} failed on {'; '.join(failed)}")


def _manifest(
    tmp: Path, job: _Job, *, precision: dict[str, Any], build: dict[str, Any]
) -> dict[str, Any]:
    model, bundle, provenance = job.target.model, job.bundle, job.provenance
    arrays = {path.stem: describe(path) for path in sorted(tmp.glob("*.npy"))}
    num_classes = arrays["logits"]["shape"][2]
    # Models without a class list or num_classes are checked here, by their logits' width.
    _check_classes(
        model, bundle, job.logit_classes, outputs=num_classes, what=f"the model for {tmp}"
    )
    names = getattr(bundle, "class_names", None) or getattr(model, "class_names", None)
    class_names = [str(c) for c in names] if names else [str(i) for i in range(num_classes)]
    ids = getattr(bundle, "class_ids", None)
    class_ids = [str(c) for c in ids] if ids else class_names
    hierarchy = getattr(bundle, "hierarchy", None)
    meta = getattr(model, "meta", None) or {}
    config = getattr(model, "config", None) or {}
    default_id = f"{config.get('arch', type(model).__name__)}-{model.kind}"
    model_id = job.target.model_id
    return {
        "format": FORMAT,
        "key": job.key,
        "build_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "model": {
            "model_id": model_id or meta.get("model_id") or meta.get("name") or default_id,
            "checkpoint_sha256": provenance["checkpoint_sha256"],
            "checkpoint_hash_source": job.hash_source,
            "checkpoint_path": meta.get("checkpoint_path"),
            "kind": provenance["kind"],
            "nesting": provenance["nesting"],
            "feature_dim": arrays["features"]["shape"][1],
            "num_classes": num_classes,
            "config": config,
        },
        "dataset": {
            "name": getattr(bundle, "name", None),
            "split": provenance["split"],
            "fingerprint": provenance["dataset_fingerprint"],
            "transform": provenance["transform"],
            "num_samples": provenance["num_samples"],
            "class_subset": provenance.get("class_subset"),
        },
        "class_names": class_names,
        "class_ids": class_ids,
        **({"logit_classes": job.logit_classes} if job.logit_classes is not None else {}),
        "hierarchy": None if hierarchy is None else {str(k): v for k, v in hierarchy.items()},
        "precision": precision,
        "build": build,
        "versions": library_versions(),
        "arrays": arrays,
    }


def _current_cache(cache_dir: Path, provenance: dict[str, Any], key: str) -> EmbeddingCache | None:
    """The cache at ``cache_dir`` if it is intact and has this provenance ``key``."""
    if not (cache_dir / MANIFEST).exists():
        return None
    try:
        cache = open_cache(cache_dir)
    except (ValueError, OSError) as exc:
        logger.warning("replacing the unreadable cache at %s: %s", cache_dir, exc)
        return None
    if cache.manifest.get("key") == key:
        # Reuse reads the checksums (~0.1 s per 100 MB): a damaged array of the right size
        # opens fine, and reusing it would feed silently wrong numbers to every analysis.
        try:
            cache.verify()
        except CacheCorruptedError as exc:
            logger.warning("replacing the corrupted cache at %s: %s", cache_dir, exc)
            return None
        return cache
    old = cache.manifest.get("provenance", {})
    changed = [name for name, value in provenance.items() if old.get(name) != value]
    logger.info("cache at %s is stale (%s changed); recomputing", cache_dir, ", ".join(changed))
    return None
