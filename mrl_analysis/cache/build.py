"""Building a cache: run a model once over a dataset split and keep its outputs on disk.

:func:`embed_dataset` extracts features and logits chunk by chunk (resumable), assembles
the final arrays and installs them atomically; see :mod:`mrl_analysis.cache.store` for the
layout on disk, reuse, staleness and crash safety.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mrl_analysis.cache.reader import EmbeddingCache, open_cache
from mrl_analysis.cache.store import (
    FORMAT,
    MANIFEST,
    CacheCorruptedError,
    ClassNamesMismatchWarning,
    FeaturesDtype,
    cache_provenance,
    check_replaceable,
    checkpoint_hash,
    class_subset,
    describe,
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
from mrl_analysis.core.checks import check_int
from mrl_analysis.core.versions import library_versions

logger = logging.getLogger(__name__)

_FLOAT16_MAX = float(np.finfo(np.float16).max)


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


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    target = torch.device(device)
    model.to(target)
    return target


def _chunk_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.npz"


def _save_chunk(path: Path, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    features = np.concatenate([p[0] for p in parts])
    finite = np.abs(features[np.isfinite(features)])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            features=features,
            logits=np.concatenate([p[1] for p in parts], axis=1),
            labels=np.concatenate([p[2] for p in parts]),
            absmax=np.float64(finite.max(initial=0.0)),
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_plan(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _extract(
    model: nn.Module,
    dataset: Any,
    work: Path,
    plan: dict[str, Any],
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    progress: bool,
    desc: str,
) -> tuple[list[tuple[int, int]], int]:
    """Embed every chunk ``work`` does not hold yet; returns chunk bounds and #reused."""
    plan_file = work / "plan.json"
    if work.exists() and _read_plan(plan_file) != plan:
        shutil.rmtree(work)  # laid out for another chunk size: its chunks do not line up
    work.mkdir(exist_ok=True)
    tmp = plan_file.with_name("plan.json.tmp")
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, plan_file)

    n, chunk_size = plan["num_samples"], plan["chunk_size"]
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    pending = [i for i in range(len(bounds)) if not _chunk_file(work, i).exists()]
    reused = len(bounds) - len(pending)
    if not pending:
        return bounds, reused
    # Batches never straddle a chunk, so every chunk is written as soon as it is complete.
    batches = [
        list(range(b, min(b + batch_size, bounds[i][1])))
        for i in pending
        for b in range(bounds[i][0], bounds[i][1], batch_size)
    ]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    head = _model_head(model)
    G = len(model.nesting)
    todo = iter(pending)
    current = next(todo)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    filled = 0
    total = sum(bounds[i][1] - bounds[i][0] for i in pending)
    with (
        torch.inference_mode(),
        tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar,
    ):
        for batch in loader:
            images, labels = batch[0], batch[1]
            feats = model.embed(images.to(device, non_blocking=True))
            logits = head(feats)
            if feats.dim() != 2 or tuple(logits.shape[:2]) != (G, len(images)):
                raise ValueError(
                    f"model.embed gave {tuple(feats.shape)} and the head {tuple(logits.shape)} "
                    f"for a batch of {len(images)}: expected [N, d] and [{G}, N, C] "
                    f"(one logits row per nesting size {list(model.nesting)})"
                )
            parts.append(
                (
                    feats.float().cpu().numpy(),
                    logits.float().cpu().numpy(),
                    torch.as_tensor(labels).numpy().astype(np.int64),
                )
            )
            filled += len(images)
            bar.update(len(images))
            start, end = bounds[current]
            if filled == end - start:
                _save_chunk(_chunk_file(work, current), parts)
                parts, filled = [], 0
                current = next(todo, -1)
    return bounds, reused


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
    features = open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=(n, d))
    logits = open_memmap(tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(G, n, C))
    labels = open_memmap(tmp / "labels.npy", mode="w+", dtype=np.int64, shape=(n,))
    cast_error = 0.0
    for (start, end), chunk in zip(bounds, chunks, strict=True):
        with np.load(chunk) as z:
            exact = z["features"]
            features[start:end] = exact
            if fits:
                diff = np.abs(features[start:end].astype(np.float32) - exact)
                cast_error = max(cast_error, float(np.nanmax(diff, initial=0.0)))
            logits[:, start:end] = z["logits"]
            if outside is not None:
                logits[:, start:end, outside] = -np.inf
            labels[start:end] = z["labels"]
    if targets is not None and not np.array_equal(labels, targets):
        bad = int(np.flatnonzero(labels != targets)[0])
        raise ValueError(
            f"bundle.targets disagree with the labels bundle.dataset yields (first at index "
            f"{bad}: {targets[bad]} vs {labels[bad]}); fix the bundle so that they match"
        )
    for array in (features, logits, labels):
        array.flush()
    del features, logits, labels

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
) -> EmbeddingCache:
    """Run ``model`` once over ``bundle.dataset`` and cache features and logits on disk.

    ``model`` follows the model contract (``nesting``, ``kind``, ``embed``, ``logits_at``,
    ``meta``; see ``docs/architecture.md``); ``bundle`` is a ``DatasetBundle`` or any
    object with ``dataset`` and ``fingerprint`` (``targets``, ``class_names``,
    ``class_ids``, ``hierarchy``, ``sample_ids``, ``transform``, ``split``, ``name`` are
    used when present). If ``cache_dir`` already holds a cache with the same provenance
    it is returned once its checksums match (a damaged cache is rebuilt, with a warning);
    otherwise it is (re)computed, resuming an interrupted run from
    its finished chunks, and swapped in atomically. Batches never straddle a chunk, so
    keep ``chunk_size`` a multiple of ``batch_size``. ``device`` (default: where the model
    is) moves the model there. ``model_id`` is a label for the manifest (default: from
    ``model.meta`` or the config); it does not affect staleness. ``features_dtype``
    ``"float32"`` stores features exactly (``"float16"`` falls back to it by itself when
    a value is out of float16's range). Processes asking for the same ``cache_dir`` at once
    wait for the first one and then reuse its result.

    ``logit_classes`` declares a model trained on a subset of the bundle's classes: the
    bundle label each logit column stands for (one per model output). The manifest records
    it as ``logit_classes``; without it, a bundle naming another number of classes than the
    model has outputs gets a :class:`ClassNamesMismatchWarning`. Both come from the
    checkpoint and the bundle, which the cache key covers, so it does not affect staleness.
    """
    for what, value in {"batch_size": batch_size, "chunk_size": chunk_size}.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if features_dtype not in ("float16", "float32"):
        raise ValueError(f"features_dtype must be 'float16' or 'float32', not {features_dtype!r}")
    if not hasattr(bundle, "dataset"):
        raise ValueError("bundle has no .dataset: pass a DatasetBundle (see get_dataset)")
    n = len(bundle.dataset)
    if n == 0:
        raise ValueError("bundle.dataset is empty: nothing to embed")
    if logit_classes is not None:
        logit_classes = [check_int(c, "logit_classes entry", low=0) for c in logit_classes]
        if len(set(logit_classes)) != len(logit_classes):
            raise ValueError(f"logit_classes must be distinct labels, got {logit_classes}")
    sample_ids = getattr(bundle, "sample_ids", None)
    sample_ids = [f"index/{i}" for i in range(n)] if sample_ids is None else list(sample_ids)
    if len(sample_ids) != n:
        raise ValueError(f"bundle.sample_ids has {len(sample_ids)} ids for {n} samples")
    targets = getattr(bundle, "targets", None)
    targets = None if targets is None else np.asarray(targets, dtype=np.int64)
    head_params = _mrle_head(model) if model.kind == "mrl-e" else None

    cache_dir = Path(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_sha256, hash_source = checkpoint_hash(model)
    provenance = cache_provenance(model, bundle, features_dtype, checkpoint_sha256)
    key = hash_json(provenance)

    with locked(sibling(cache_dir, "lock"), cache_dir):
        existing = _current_cache(cache_dir, provenance, key)
        if existing is not None:
            return existing
        check_replaceable(cache_dir)
        work = sibling(cache_dir, f"partial-{key[:16]}")
        remove_leftovers(cache_dir, keep=work)

        device = _resolve_device(model, device)
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        plan = {"key": key, "num_samples": n, "chunk_size": chunk_size}
        try:
            bounds, resumed = _extract(
                model,
                bundle.dataset,
                work,
                plan,
                batch_size=batch_size,
                device=device,
                num_workers=num_workers,
                progress=progress,
                desc=f"embed {cache_dir.name}",
            )
        finally:
            model.train(was_training)

        tmp = sibling(cache_dir, f"tmp-{key[:16]}-{os.getpid()}")
        try:
            precision = _assemble(
                work,
                tmp,
                bounds,
                features_dtype=features_dtype,
                sample_ids=sample_ids,
                targets=targets,
                head_params=head_params,
                class_subset=class_subset(bundle),
            )
            manifest = _manifest(
                tmp,
                model,
                bundle,
                provenance=provenance,
                key=key,
                model_id=model_id,
                hash_source=hash_source,
                precision=precision,
                logit_classes=logit_classes,
                build={
                    "batch_size": batch_size,
                    "chunk_size": chunk_size,
                    "num_chunks": len(bounds),
                    "chunks_resumed": resumed,
                    "device": str(device),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            for name in manifest["arrays"]:
                fsync_file(tmp / manifest["arrays"][name]["file"])
            write_manifest(tmp, manifest)
            fsync_dir(tmp)
            install(tmp, cache_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        return open_cache(cache_dir)


def _manifest(
    tmp: Path,
    model: nn.Module,
    bundle: Any,
    *,
    provenance: dict[str, Any],
    key: str,
    model_id: str | None,
    hash_source: str,
    precision: dict[str, Any],
    logit_classes: list[int] | None,
    build: dict[str, Any],
) -> dict[str, Any]:
    arrays = {path.stem: describe(path) for path in sorted(tmp.glob("*.npy"))}
    num_classes = arrays["logits"]["shape"][2]
    names = getattr(bundle, "class_names", None) or getattr(model, "class_names", None)
    class_names = [str(c) for c in names] if names else [str(i) for i in range(num_classes)]
    ids = getattr(bundle, "class_ids", None)
    class_ids = [str(c) for c in ids] if ids else class_names
    if logit_classes is not None:
        if len(logit_classes) != num_classes or max(logit_classes) >= len(class_names):
            raise ValueError(
                f"logit_classes {logit_classes} must give one label of the bundle's "
                f"{len(class_names)} classes to each of the model's {num_classes} outputs"
            )
    elif len(class_names) != num_classes:
        warnings.warn(
            f"the bundle names {len(class_names)} classes but the model has {num_classes} "
            "outputs: cache.class_names will not index the logits",
            ClassNamesMismatchWarning,
            stacklevel=3,
        )
    hierarchy = getattr(bundle, "hierarchy", None)
    meta = getattr(model, "meta", None) or {}
    config = getattr(model, "config", None) or {}
    default_id = f"{config.get('arch', type(model).__name__)}-{model.kind}"
    return {
        "format": FORMAT,
        "key": key,
        "build_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "model": {
            "model_id": model_id or meta.get("model_id") or meta.get("name") or default_id,
            "checkpoint_sha256": provenance["checkpoint_sha256"],
            "checkpoint_hash_source": hash_source,
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
        **({"logit_classes": logit_classes} if logit_classes is not None else {}),
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
