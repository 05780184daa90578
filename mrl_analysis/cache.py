"""Embedding cache: run a model once over a dataset split and keep its outputs on disk.

A cache is a directory of memory-mappable ``.npy`` arrays plus ``manifest.json``::

    features.npy      [N, d]     pooled backbone features, full d (float16, see below)
    logits.npy        [G, N, C]  float32, one row per nesting size (G = len(nesting))
    labels.npy        [N]        int64
    sample_ids.npy    [N]        unicode
    head_weight.npy   [C, d]     MRL-E only: the shared classifier, so that
    head_bias.npy     [C]        ``logits_at(m)`` works at any size from the cache alone
    manifest.json     provenance, shapes, dtypes and a sha256 per array; written last

Precision. Features are stored as float16 when every value fits float16's range (else
float32, recorded in the manifest): pooled features are O(1), and float16's relative
rounding error of 2**-11 changes neither 1-NN neighbours nor head argmaxes in practice
(``tests/test_cache.py`` checks both); it halves the disk and page-cache footprint of the
largest array. The manifest records the largest absolute rounding error actually made.
Logits stay float32: near-ties between classes are common enough that float16 would flip
some predictions, and the oracle / cascade analyses compare predictions exactly.

Class subsets. A split whose labels can only be some of the model's classes (ImageNet-A
and -R: 200 of the 1000; ``bundle.class_subset_indices``) is scored among those classes
only, as in the paper: the other classes' logits are stored as ``-inf`` (so every
prediction, probability and cascade sees the 200-way problem) and ``logits_at`` applies
the same mask; the manifest lists the subset under ``dataset.class_subset``.

Reuse and staleness. A cache is keyed by a hash of its provenance: the checkpoint's
content hash, the dataset fingerprint, split, transform ``repr``, sample count, head kind,
nesting and feature dtype. ``embed_dataset`` with the same key returns the existing cache;
with a different key it recomputes into the same directory and swaps the new content in
only once it is complete.

Crash safety. Extraction writes one ``.npz`` per ``chunk_size`` samples into a hidden
``.<name>.partial-<key>`` directory next to the cache (each chunk written to a temporary
name, fsynced and renamed), so an interrupted run resumes from its finished chunks. The
final arrays are assembled in a hidden temporary directory, the manifest is written last,
and the directory is renamed into place (an atomic ``renameat2(RENAME_EXCHANGE)`` swap
when it replaces an older cache). A directory without ``manifest.json`` is never treated
as a cache. An exclusive ``fcntl.flock`` on ``.<name>.lock`` makes concurrent builders of
the same cache wait for each other instead of corrupting it; readers need no lock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

__all__ = [
    "CacheCorruptedError",
    "EmbeddingCache",
    "cache_path",
    "embed_dataset",
    "open_cache",
]

logger = logging.getLogger(__name__)

FORMAT = "mrl-analysis-cache/1"
MANIFEST = "manifest.json"
FeaturesDtype = Literal["float16", "float32"]
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_HASH_BLOCK = 16 << 20
# Every file a finished cache may hold; anything else in a directory means it is not ours.
_CACHE_FILES = frozenset(
    {
        MANIFEST,
        "features.npy",
        "logits.npy",
        "labels.npy",
        "sample_ids.npy",
        "head_weight.npy",
        "head_bias.npy",
    }
)


class CacheCorruptedError(ValueError):
    """A cache file is missing, truncated or does not match its manifest checksum."""


# --------------------------------------------------------------------------- paths


def cache_path(root: str | os.PathLike, model_name: str, dataset_name: str, split: str) -> Path:
    """The conventional cache directory ``<root>/<model_name>/<dataset_name>-<split>``.

    >>> cache_path("data/cache", "resnet18-mrl", "fashion-mnist", "test").as_posix()
    'data/cache/resnet18-mrl/fashion-mnist-test'
    """
    parts = {"model_name": model_name, "dataset_name": dataset_name, "split": split}
    for what, value in parts.items():
        if not isinstance(value, str) or value in ("", ".", "..") or re.search(r"[/\\]", value):
            raise ValueError(
                f"{what}={value!r} cannot be used as a path component: give a non-empty "
                "name without slashes"
            )
    return Path(root) / model_name / f"{dataset_name}-{split}"


def _sibling(cache_dir: Path, suffix: str) -> Path:
    return cache_dir.parent / f".{cache_dir.name}.{suffix}"


# ---------------------------------------------------------------------- provenance


def transform_repr(transform: Any) -> str:
    """``repr(transform)`` without memory addresses, which differ from run to run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _state_dict_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|{value!r}\n".encode())
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _checkpoint_hash(model: nn.Module) -> tuple[str, str]:
    """``(sha256, source)``: from ``meta``, the checkpoint file, or the weights in memory."""
    meta = getattr(model, "meta", None) or {}
    if meta.get("checkpoint_sha256"):
        return str(meta["checkpoint_sha256"]), "meta"
    path = meta.get("checkpoint_path") or getattr(model, "checkpoint_path", None)
    if path and Path(path).is_file():
        return _sha256_file(Path(path)), "file"
    return _state_dict_sha256(model), "state_dict"


def _hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _bundle_transform(bundle: Any) -> Any:
    if hasattr(bundle, "transform"):
        return bundle.transform
    return getattr(bundle.dataset, "transform", None)


def _provenance(
    model: nn.Module, bundle: Any, features_dtype: str, checkpoint_sha256: str
) -> dict[str, Any]:
    fingerprint = getattr(bundle, "fingerprint", None)
    if not fingerprint:
        raise ValueError(
            "bundle.fingerprint is missing: the cache needs a hash of the data files, split "
            "and class selection to notice a changed dataset (get_dataset sets it)"
        )
    split = getattr(bundle, "split", None)
    return {
        "format": FORMAT,
        "checkpoint_sha256": checkpoint_sha256,
        "dataset_fingerprint": str(fingerprint),
        "split": None if split is None else str(split),
        "transform": transform_repr(_bundle_transform(bundle)),
        "num_samples": len(bundle.dataset),
        "kind": str(model.kind),
        "nesting": [int(m) for m in model.nesting],
        "features_dtype": features_dtype,
        # Only when present, so that the keys of ordinary caches stay what they were.
        **(
            {"class_subset": subset.tolist()}
            if (subset := _class_subset(bundle)) is not None
            else {}
        ),
    }


def _class_subset(bundle: Any) -> np.ndarray | None:
    subset = getattr(bundle, "class_subset_indices", None)
    return None if subset is None else np.unique(np.asarray(subset, dtype=np.int64))


def _versions() -> dict[str, str | None]:
    import torchvision

    try:
        ours: str | None = metadata.version("mrl-analysis")
    except metadata.PackageNotFoundError:
        ours = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "mrl_analysis": ours,
    }


# ------------------------------------------------------------------ files on disk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def _locked(lock_path: Path, what: Path) -> Iterator[None]:
    # Append mode: opening must never truncate a file another process holds locked.
    with open(lock_path, "ab") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building %s; waiting for it", what)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _install(src: Path, dst: Path, *, atomic_swap: bool = True) -> None:
    """Move the finished directory ``src`` to ``dst``, replacing an older ``dst``."""
    if not dst.exists():
        os.rename(src, dst)
    elif atomic_swap and _exchange(src, dst):
        shutil.rmtree(src)  # now holds the old content
    else:
        # Without an atomic swap there is a short window with no cache at dst; a crash
        # inside it leaves the old one under .old-*, which the next build removes.
        old = _sibling(dst, f"old-{os.getpid()}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old)
    _fsync_dir(dst.parent)


def _check_replaceable(cache_dir: Path) -> None:
    if not cache_dir.exists():
        return
    if not cache_dir.is_dir():
        raise ValueError(f"{cache_dir} exists and is not a directory: choose another cache_dir")
    names = {p.name for p in cache_dir.iterdir()}
    if names and MANIFEST not in names and not names <= _CACHE_FILES:
        raise ValueError(
            f"{cache_dir} exists and is not an embedding cache (it holds {sorted(names)[:5]}); "
            "refusing to replace it: choose another cache_dir or delete it"
        )


def _remove_leftovers(cache_dir: Path, keep: Path) -> None:
    """Delete temporary dirs of crashed builds; safe because the caller holds the lock."""
    prefix = f".{cache_dir.name}."
    for path in cache_dir.parent.iterdir():
        if path == keep or not path.name.startswith(prefix) or not path.is_dir():
            continue
        if path.name[len(prefix) :].startswith(("tmp-", "old-", "partial-")):
            shutil.rmtree(path, ignore_errors=True)


def _describe(path: Path) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r")
    return {
        "file": path.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "nbytes": path.stat().st_size,
        "sha256": _sha256_file(path),
    }


def _write_array(directory: Path, name: str, array: np.ndarray) -> Path:
    path = directory / f"{name}.npy"
    np.save(path, array)
    return path


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
    _write_array(tmp, "sample_ids", np.asarray(sample_ids, dtype=f"<U{width}"))
    if head_params is not None:
        _write_array(tmp, "head_weight", head_params[0])
        _write_array(tmp, "head_bias", head_params[1])
    return {
        "features_dtype": np.dtype(dtype).name,
        "features_dtype_requested": features_dtype,
        "features_max_abs": absmax,
        "features_float16_max_abs_error": cast_error if fits else None,
        "logits_dtype": "float32",
    }


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    path = directory / MANIFEST
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())


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
    sample_ids = getattr(bundle, "sample_ids", None)
    sample_ids = [f"index/{i}" for i in range(n)] if sample_ids is None else list(sample_ids)
    if len(sample_ids) != n:
        raise ValueError(f"bundle.sample_ids has {len(sample_ids)} ids for {n} samples")
    targets = getattr(bundle, "targets", None)
    targets = None if targets is None else np.asarray(targets, dtype=np.int64)
    head_params = _mrle_head(model) if model.kind == "mrl-e" else None

    cache_dir = Path(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_sha256, hash_source = _checkpoint_hash(model)
    provenance = _provenance(model, bundle, features_dtype, checkpoint_sha256)
    key = _hash_json(provenance)

    with _locked(_sibling(cache_dir, "lock"), cache_dir):
        existing = _current_cache(cache_dir, provenance, key)
        if existing is not None:
            return existing
        _check_replaceable(cache_dir)
        work = _sibling(cache_dir, f"partial-{key[:16]}")
        _remove_leftovers(cache_dir, keep=work)

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

        tmp = _sibling(cache_dir, f"tmp-{key[:16]}-{os.getpid()}")
        try:
            precision = _assemble(
                work,
                tmp,
                bounds,
                features_dtype=features_dtype,
                sample_ids=sample_ids,
                targets=targets,
                head_params=head_params,
                class_subset=_class_subset(bundle),
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
                _fsync_file(tmp / manifest["arrays"][name]["file"])
            _write_manifest(tmp, manifest)
            _fsync_dir(tmp)
            _install(tmp, cache_dir)
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
    build: dict[str, Any],
) -> dict[str, Any]:
    arrays = {path.stem: _describe(path) for path in sorted(tmp.glob("*.npy"))}
    num_classes = arrays["logits"]["shape"][2]
    names = getattr(bundle, "class_names", None) or getattr(model, "class_names", None)
    class_names = [str(c) for c in names] if names else [str(i) for i in range(num_classes)]
    ids = getattr(bundle, "class_ids", None)
    class_ids = [str(c) for c in ids] if ids else class_names
    if len(class_names) != num_classes:
        warnings.warn(
            f"the bundle names {len(class_names)} classes but the model has {num_classes} "
            "outputs: cache.class_names will not index the logits",
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
        "hierarchy": None if hierarchy is None else {str(k): v for k, v in hierarchy.items()},
        "precision": precision,
        "build": build,
        "versions": _versions(),
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


def _fix_hint(path: Path) -> str:
    return f"delete {path} and run embed_dataset again to recompute it"


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        if not path.exists():
            raise FileNotFoundError(
                f"no embedding cache at {path}: build it with embed_dataset(model, bundle, path)"
            )
        raise FileNotFoundError(
            f"{path} has no {MANIFEST}, so it is not a complete embedding cache (an "
            "interrupted build never writes one): run embed_dataset to build it"
        )
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CacheCorruptedError(f"{file} is not valid JSON ({exc}): {_fix_hint(path)}") from exc
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{path} is in cache format {manifest.get('format')!r}, this version reads "
            f"{FORMAT!r}: {_fix_hint(path)}"
        )
    return manifest


def _open_arrays(path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Memory-map every array, checking only sizes, shapes and dtypes (no data is read)."""
    arrays = {}
    for name, spec in manifest["arrays"].items():
        file = path / spec["file"]
        if not file.is_file():
            raise CacheCorruptedError(f"{file.name} is missing from {path}: {_fix_hint(path)}")
        size = file.stat().st_size
        if size != spec["nbytes"]:
            raise CacheCorruptedError(
                f"{file.name} in {path} has {size} bytes but the manifest says {spec['nbytes']} "
                f"(truncated or overwritten): {_fix_hint(path)}"
            )
        try:
            array = np.load(file, mmap_mode="r")
        except ValueError as exc:
            raise CacheCorruptedError(
                f"{file.name} in {path} is not a readable .npy file ({exc}): {_fix_hint(path)}"
            ) from exc
        if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
            raise CacheCorruptedError(
                f"{file.name} in {path} holds {array.dtype.str} {list(array.shape)}, the manifest "
                f"says {spec['dtype']} {spec['shape']}: {_fix_hint(path)}"
            )
        arrays[name] = array
    missing = {"features", "logits", "labels", "sample_ids"} - arrays.keys()
    if missing:
        raise CacheCorruptedError(
            f"the manifest of {path} lists no {sorted(missing)}: {_fix_hint(path)}"
        )
    return arrays


def open_cache(path: str | os.PathLike) -> EmbeddingCache:
    """Open a finished cache lazily: arrays are memory-mapped, nothing is read up front.

    Only file sizes, shapes and dtypes are checked here; ``cache.verify()`` checks the
    sha256 of every array.
    """
    path = Path(path)
    for _ in range(3):
        manifest = _read_manifest(path)
        arrays = _open_arrays(path, manifest)
        # A concurrent rebuild may swap the directory between reading the manifest and
        # mapping the arrays; the build id tells whether both came from the same build.
        if _read_manifest(path).get("build_id") == manifest.get("build_id"):
            return EmbeddingCache(path, manifest, arrays)
    raise RuntimeError(f"{path} kept being replaced while opening it (a rebuild is running); retry")


class EmbeddingCache:
    """A model's outputs over one dataset split, memory-mapped from disk (see module doc).

    Arrays returned without a copy (``labels``, ``logits()``) are read-only views of the
    files; ``features()``, ``probabilities()``, ``predictions()`` and ``logits_at()``
    return new float32 / int64 arrays.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self._arrays = arrays

    @property
    def nesting(self) -> list[int]:
        return list(self.manifest["provenance"]["nesting"])

    @property
    def kind(self) -> str:
        return self.manifest["provenance"]["kind"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def class_ids(self) -> list[str]:
        return list(self.manifest["class_ids"])

    @property
    def hierarchy(self) -> dict[str, str] | None:
        return self.manifest["hierarchy"]

    @property
    def labels(self) -> np.ndarray:
        """``[N]`` int64 class labels."""
        return self._arrays["labels"]

    @cached_property
    def sample_ids(self) -> list[str]:
        return self._arrays["sample_ids"].tolist()

    @property
    def num_samples(self) -> int:
        return int(self._arrays["labels"].shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self._arrays["features"].shape[1])

    @property
    def num_classes(self) -> int:
        return int(self._arrays["logits"].shape[2])

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"EmbeddingCache({str(self.path)!r}, kind={self.kind!r}, nesting={self.nesting}, "
            f"N={self.num_samples}, d={self.feature_dim}, C={self.num_classes})"
        )

    def _check_dim(self, truncate_dim: int | None) -> int:
        if truncate_dim is None:
            return self.feature_dim
        m = int(truncate_dim)
        if not 1 <= m <= self.feature_dim:
            raise ValueError(f"truncate_dim must be in 1..{self.feature_dim}, got {truncate_dim}")
        return m

    def features(self, truncate_dim: int | None = None, normalize: bool = False) -> np.ndarray:
        """The first ``truncate_dim`` features (all by default), float32 ``[N, m]``.

        ``normalize`` L2-normalizes each row *after* truncation, as MRL retrieval does.
        """
        m = self._check_dim(truncate_dim)
        out = np.array(self._arrays["features"][:, :m], dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, np.finfo(np.float32).tiny)
        return out

    def logits(self) -> np.ndarray:
        """Logits of every nesting size, float32 ``[G, N, C]`` (read-only, memory-mapped)."""
        return self._arrays["logits"]

    def probabilities(self) -> np.ndarray:
        """Softmax of :meth:`logits` over classes, float32 ``[G, N, C]``."""
        logits = self.logits()
        out = np.empty(logits.shape, dtype=np.float32)
        for g in range(logits.shape[0]):  # one size at a time bounds the temporaries
            shifted = logits[g] - logits[g].max(axis=1, keepdims=True)
            np.exp(shifted, out=shifted)
            out[g] = shifted / shifted.sum(axis=1, keepdims=True)
        return out

    def probabilities_at(self, truncate_dim: int) -> np.ndarray:
        """Softmax of :meth:`logits_at` over classes, float32 ``[N, C]``: one size only, so
        a large eval set never needs the full ``[G, N, C]`` array."""
        logits = self.logits_at(truncate_dim).astype(np.float32, copy=False)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predictions(self) -> np.ndarray:
        """Predicted class per nesting size and sample, int64 ``[G, N]``."""
        return np.argmax(self.logits(), axis=2).astype(np.int64, copy=False)

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """MRL-E's shared classifier: weight ``[C, d]`` and bias ``[C]``, float32."""
        if self.kind != "mrl-e":
            raise ValueError(
                f"a {self.kind} cache stores no shared head (only MRL-E has one); use logits()"
            )
        return np.array(self._arrays["head_weight"]), np.array(self._arrays["head_bias"])

    def logits_at(self, truncate_dim: int) -> np.ndarray:
        """Logits ``[N, C]`` at size ``truncate_dim``.

        MRL-E: any ``1 <= m <= d``, from the cached features and shared head (so sizes
        between the trained ones work, paper Fig. 5). MRL / FF: the trained sizes only.
        """
        m = self._check_dim(truncate_dim)
        if self.kind == "mrl-e":
            weight, bias = self.head()
            out = self.features(m) @ weight[:, :m].T + bias
            subset = self.manifest["dataset"].get("class_subset")
            if subset is not None:
                outside = np.setdiff1d(np.arange(out.shape[1]), subset)
                out[:, outside] = -np.inf
            return out
        if m not in self.nesting:
            raise ValueError(
                f"a {self.kind} cache has logits only for sizes {self.nesting}, not {m} "
                "(only MRL-E can classify at sizes between the trained ones)"
            )
        return np.array(self.logits()[self.nesting.index(m)])

    def verify(self) -> None:
        """Check every array against its sha256 in the manifest (reads all the data).

        Raises :class:`CacheCorruptedError` naming the first damaged file.
        """
        for spec in self.manifest["arrays"].values():
            file = self.path / spec["file"]
            if not file.is_file():
                raise CacheCorruptedError(
                    f"{file.name} is missing from {self.path}: {_fix_hint(self.path)}"
                )
            if _sha256_file(file) != spec["sha256"]:
                raise CacheCorruptedError(
                    f"{file.name} in {self.path} does not match its sha256 checksum in "
                    f"{MANIFEST} (the file is corrupted): {_fix_hint(self.path)}"
                )
