"""The embedding cache on disk: its layout, provenance key, checksums, locks and atomic install.

An embedding cache keeps a model's outputs over one dataset split, so that every analysis
reads them instead of running the model again. :mod:`~mrl_analysis.cache.build` writes
caches (``embed_dataset``), :mod:`~mrl_analysis.cache.reader` reads them (``open_cache``,
``EmbeddingCache``); this module holds what both agree on.

A cache is a directory of memory-mappable ``.npy`` arrays plus ``manifest.json``::

    features.npy      [N, d]     pooled backbone features, full d (float16, see below)
    logits.npy        [G, N, C]  float32, one row per nesting size (G = len(nesting))
    labels.npy        [N]        int64
    sample_ids.npy    [N]        unicode
    head_weight.npy   [C, d]     MRL-E only: the shared classifier, so that
    head_bias.npy     [C]        ``logits_at(m)`` works at any size from the cache alone
    manifest.json     provenance, shapes, dtypes and a sha256 per array; written last

The manifest covers itself too: ``manifest_sha256`` is the sha256 of its canonical JSON
without that field (:func:`manifest_sha256`), checked by ``open_cache``, so an edited
nesting or class list is refused instead of mislabelling the arrays.

Precision. Features are stored as float16 when every value fits float16's range (else
float32, recorded in the manifest): pooled features are O(1), and float16's relative
rounding error of 2**-11 changes neither 1-NN neighbours nor head argmaxes in practice
(``tests/cache/test_cache_reader.py`` checks both); it halves the disk and page-cache
footprint of the largest array. The manifest records the largest absolute rounding error
actually made.
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
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from mrl_analysis.models.checkpoints import weights_sha256

logger = logging.getLogger(__name__)

FORMAT = "mrl-analysis-cache/1"
MANIFEST = "manifest.json"
#: How features are stored; ``"float16"`` falls back to float32 when a value is out of range.
FeaturesDtype = Literal["float16", "float32"]
_HASH_BLOCK = 16 << 20


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


def sibling(cache_dir: Path, suffix: str) -> Path:
    """The hidden path ``.<name>.<suffix>`` next to ``cache_dir`` (locks, temporary dirs)."""
    return cache_dir.parent / f".{cache_dir.name}.{suffix}"


# ---------------------------------------------------------------------- provenance


def transform_repr(transform: Any) -> str:
    """``repr(transform)`` without memory addresses, which differ from run to run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def sha256_file(path: Path) -> str:
    """sha256 of a file's contents, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hash(model: nn.Module) -> tuple[str, str]:
    """``(sha256, source)``: from ``meta``, the checkpoint file, or the weights in memory."""
    meta = getattr(model, "meta", None) or {}
    if meta.get("checkpoint_sha256"):
        return str(meta["checkpoint_sha256"]), "meta"
    path = meta.get("checkpoint_path") or getattr(model, "checkpoint_path", None)
    if path and Path(path).is_file():
        return sha256_file(Path(path)), "file"
    return weights_sha256(model.state_dict()), "state_dict"


def hash_json(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys): the cache key of a provenance."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _bundle_transform(bundle: Any) -> Any:
    if hasattr(bundle, "transform"):
        return bundle.transform
    return getattr(bundle.dataset, "transform", None)


def cache_provenance(
    model: nn.Module, bundle: Any, features_dtype: str, checkpoint_sha256: str
) -> dict[str, Any]:
    """Everything a cache's content depends on; its :func:`hash_json` is the cache key."""
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
            if (subset := class_subset(bundle)) is not None
            else {}
        ),
    }


def class_subset(bundle: Any) -> np.ndarray | None:
    """The bundle's ``class_subset_indices``, sorted and distinct, or None."""
    subset = getattr(bundle, "class_subset_indices", None)
    return None if subset is None else np.unique(np.asarray(subset, dtype=np.int64))


# ------------------------------------------------------------------ files on disk


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's contents to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def locked(lock_path: Path, what: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` while building ``what``."""
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


def install(src: Path, dst: Path, *, atomic_swap: bool = True) -> None:
    """Move the finished directory ``src`` to ``dst``, replacing an older ``dst``."""
    if not dst.exists():
        os.rename(src, dst)
    elif atomic_swap and _exchange(src, dst):
        shutil.rmtree(src)  # now holds the old content
    else:
        # Without an atomic swap there is a short window with no cache at dst; a crash
        # inside it leaves the old one under .old-*, which the next build removes.
        old = sibling(dst, f"old-{os.getpid()}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old)
    fsync_dir(dst.parent)


def check_replaceable(cache_dir: Path) -> None:
    """Refuse to replace ``cache_dir`` unless it is empty or a manifest of ours says it is a
    cache holding nothing else.

    A folder of someone's own ``features.npy`` / ``labels.npy`` has a cache's file names
    but no manifest: replacing it would delete their data.
    """
    if not cache_dir.exists():
        return
    if not cache_dir.is_dir():
        raise ValueError(f"{cache_dir} exists and is not a directory: choose another cache_dir")
    names = sorted(p.name for p in cache_dir.iterdir())
    if not names:
        return
    try:
        manifest = json.loads((cache_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    ours = isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(
        FORMAT.rsplit("/", 1)[0] + "/"
    )
    if not ours:
        raise ValueError(
            f"{cache_dir} exists and is not an embedding cache: it holds {names[:5]} and no "
            f"{MANIFEST} of ours. Refusing to replace it, which would delete those files: "
            "choose another cache_dir (or move the files away yourself)"
        )
    arrays = manifest.get("arrays")
    listed = {MANIFEST}
    if isinstance(arrays, dict):
        listed |= {str(a.get("file")) for a in arrays.values() if isinstance(a, dict)}
    foreign = [name for name in names if name not in listed]
    if foreign:
        raise ValueError(
            f"{cache_dir} is an embedding cache but also holds files its manifest does not "
            f"list ({foreign[:5]}); refusing to replace it, which would delete them: move "
            "them elsewhere or choose another cache_dir"
        )


def remove_leftovers(cache_dir: Path, keep: Path) -> None:
    """Delete temporary dirs of crashed builds; safe because the caller holds the lock."""
    prefix = f".{cache_dir.name}."
    for path in cache_dir.parent.iterdir():
        if path == keep or not path.name.startswith(prefix) or not path.is_dir():
            continue
        if path.name[len(prefix) :].startswith(("tmp-", "old-", "partial-")):
            shutil.rmtree(path, ignore_errors=True)


def describe(path: Path) -> dict[str, Any]:
    """The manifest entry of one ``.npy`` file: dtype, shape, size and sha256."""
    array = np.load(path, mmap_mode="r")
    return {
        "file": path.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "nbytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def write_array(directory: Path, name: str, array: np.ndarray) -> Path:
    """Save ``array`` as ``directory/<name>.npy``."""
    path = directory / f"{name}.npy"
    np.save(path, array)
    return path


# ------------------------------------------------------------------- disk space

# Out of space, over the disk quota, or over the file size limit (RLIMIT_FSIZE).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(OSError):
    """Writing a cache ran out of disk space (or into a quota or file size limit)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC
        self.path = path


@contextmanager
def disk_space_guard(path: Path, *, resume_from: Path | None = None) -> Iterator[None]:
    """Turn running out of space while writing ``path`` (or the file an error names) into
    one :class:`DiskFullError` line: where, how much is free, what to do (``resume_from``:
    the chunks kept for a resume)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        where = Path(exc.filename) if exc.filename else path
        try:
            free = f"{shutil.disk_usage(where.parent).free / 2**20:.0f} MB free there"
        except OSError:
            free = "free space unknown"
        reason = "file size limit reached" if exc.errno == errno.EFBIG else "no space left"
        kept = (
            f"; the finished chunks stay in {resume_from}, so the next run resumes from them "
            "(delete that folder to free their space instead)"
            if resume_from is not None and resume_from.exists()
            else ""
        )
        raise DiskFullError(
            f"disk full at {where} ({reason}, {free}): free some space or choose a cache "
            f"folder on another disk{kept}",
            where,
        ) from exc


class NpyWriter:
    """An ``.npy`` file of a known dtype and shape, written in blocks without memory mapping.

    Its space is reserved first (``posix_fallocate``), so a full disk is an ``OSError``
    before any data is written, never the SIGBUS a memory-mapped write past the free
    space gets. ``write(index, block)`` puts ``block`` where element ``index`` starts;
    ``block`` must fill a contiguous run of the array (whole trailing rows)::

        with NpyWriter(path, np.float32, (G, N, C)) as out:
            out.write((g, start, 0), logits_g)  # [end - start, C]
    """

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(int(s) for s in shape)
        self._fh = open(path, "wb")
        try:
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": self.shape,
            }
            np.lib.format.write_array_header_1_0(self._fh, header)
            self._fh.flush()
            self._offset = self._fh.tell()
            size = self._offset + int(np.prod(self.shape)) * self.dtype.itemsize
            try:
                os.posix_fallocate(self._fh.fileno(), 0, size)
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise OSError(exc.errno, exc.strerror, str(path)) from exc
                os.ftruncate(self._fh.fileno(), size)  # no fallocate here: writes still fail
        except BaseException:
            self._fh.close()
            raise

    def write(self, index: tuple[int, ...], block: np.ndarray) -> None:
        """Write ``block`` (cast to the file's dtype) starting at element ``index``."""
        data = np.ascontiguousarray(block, dtype=self.dtype)
        start = int(np.ravel_multi_index(index, self.shape))
        if start + data.size > int(np.prod(self.shape)):
            raise ValueError(f"a block of {data.shape} at {index} overruns {self.shape}")
        view = memoryview(data).cast("B")
        position = self._offset + start * self.dtype.itemsize
        while view:
            try:
                written = os.pwrite(self._fh.fileno(), view, position)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            view, position = view[written:], position + written

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of ``manifest`` as canonical JSON (sorted keys, no ``manifest_sha256``)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` into ``directory`` with its own ``manifest_sha256``, and
    flush it (written last: it marks a finished cache)."""
    # The digest is taken of what a reader will parse (JSON turns tuples into lists, ...).
    body = json.loads(json.dumps(manifest, default=str))
    body["manifest_sha256"] = manifest_sha256(body)
    path = directory / MANIFEST
    with open(path, "w") as fh:
        json.dump(body, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
