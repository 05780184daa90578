"""Any embedding as a cache: arrays a user already has become an :class:`EmbeddingCache`.

The most common Matryoshka embeddings are not ours (text and image models trained with a
Matryoshka loss, models with a ``dimensions`` / ``truncate_dim`` option). :func:`import_embeddings`
turns their outputs, ``features [N, d]`` with labels, into a cache in the usual layout
(:mod:`mrl_analysis.cache.store`: ``.npy`` arrays, a manifest with a sha256 per array, written
in a hidden folder and installed atomically), so that every feature-based analysis reads it
like one of ours: k-NN per size, few-shot, FLUID, retrieval and the Matryoshka diagnostic.
An imported cache has **no classifier heads** (no ``logits.npy``): its manifest says
``"heads": false`` and :meth:`EmbeddingCache.logits` and everything built on it (linear
accuracy, oracle, cascades, Grad-CAM) refuse it with a clear error.

Inputs (paths or in-memory arrays):

* ``features``: ``.npy``, ``.safetensors`` (one tensor, or the one named ``features_key``),
  or a Parquet / Arrow / Feather table with a list column of the vectors
  (``features_key``, default ``features`` / ``embedding`` / ``embeddings``; needs pyarrow);
* ``labels``: integer class indices or class names (strings), as an array, a ``.npy``, a
  text file (one per line), or ``None`` to take them from the features file (a table column
  or a safetensors tensor named ``labels_key``, default ``label`` / ``labels``);
* ``class_names`` (list, ``.txt`` one per line or ``.json`` list) fixes the label order;
  ``superclasses`` (dict or ``.json``) maps class ids or names to superclass names;
  ``sample_ids`` (list, ``.npy``, ``.txt``, or a table column ``id`` / ``sample_id``);
* ``split``: the split's name; ``query``: a query / database division of the samples (a
  boolean mask, row indices, a ``.npy`` / ``.txt`` of either, or a fraction of every class
  drawn at random with ``seed``), written as two caches ``query`` and ``database``.

``kind`` says what the embedding claims: ``"mrl"`` (a Matryoshka embedding: every prefix in
``nesting`` is meant to be used; default ``nesting``: 1, 2, 4, … up to ``d``) or ``"ff"`` (a
fixed-size embedding, analysed at its full size ``d``; the diagnostic still tests its
prefixes). Provenance: the sha256 of every source file (of the array's bytes for in-memory
inputs) is in the manifest and its cache key, so re-importing the same files reuses the
cache and changed files replace it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.lib.format import open_memmap

from mrl_analysis.cache.reader import EmbeddingCache, open_cache
from mrl_analysis.cache.store import (
    FORMAT,
    MANIFEST,
    CacheCorruptedError,
    FeaturesDtype,
    check_replaceable,
    describe,
    fsync_dir,
    fsync_file,
    hash_json,
    install,
    locked,
    remove_leftovers,
    sha256_file,
    sibling,
    write_array,
    write_manifest,
)
from mrl_analysis.core.checks import check_choice, check_features, check_int, check_nesting
from mrl_analysis.core.versions import library_versions
from mrl_analysis.data.hierarchy import hierarchy_by_id

#: What an imported embedding may claim to be (no head: MRL-E needs its shared head).
IMPORT_KINDS: tuple[str, ...] = ("mrl", "ff")
ImportKind = Literal["mrl", "ff"]
#: Files read as tables (pyarrow).
TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".pq", ".arrow", ".feather", ".ipc")
#: Files read as arrays.
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".safetensors")
#: Names tried, in order, for a table column or safetensors tensor left unnamed.
FEATURE_KEYS = ("features", "embedding", "embeddings", "feature", "vectors")
LABEL_KEYS = ("label", "labels", "target", "targets", "class")
ID_KEYS = ("sample_id", "sample_ids", "id", "ids")

_FLOAT16_MAX = float(np.finfo(np.float16).max)
# Rows copied (and cast) at once when writing the features: bounded memory for big inputs.
_COPY_ELEMENTS = 1 << 22
_HASH_ROWS_ELEMENTS = 1 << 22

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- sources


class _Sources:
    """Reads the user's inputs once each and records their sha256 for the provenance."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.paths: dict[str, str] = {}
        self._tables: dict[Path, Any] = {}

    def record_file(self, what: str, path: Path) -> None:
        self.digests[what] = sha256_file(path)
        self.paths[what] = os.fsdecode(path.resolve())

    def record_array(self, what: str, array: np.ndarray) -> None:
        self.digests[what] = _array_digest(array)

    def table(self, path: Path) -> Any:
        if path not in self._tables:
            self._tables[path] = _read_table(path)
        return self._tables[path]


def _array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes, read in row blocks (memmaps stay lazy)."""
    a = np.asarray(array)
    if a.dtype == object:
        a = a.astype(str)
    digest = hashlib.sha256(f"{a.dtype.str}|{a.shape}\n".encode())
    rows = max(1, _HASH_ROWS_ELEMENTS // max(1, int(np.prod(a.shape[1:], dtype=np.int64))))
    for lo in range(0, a.shape[0] if a.ndim else 1, rows):
        digest.update(np.ascontiguousarray(a[lo : lo + rows] if a.ndim else a).tobytes())
    return digest.hexdigest()


def _as_path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, (str, os.PathLike)) else None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file {os.fsdecode(path)!r} not found (working directory {os.getcwd()})"
        )
    return path


def _read_table(path: Path) -> Any:
    """A Parquet / Arrow IPC / Feather file as a ``pyarrow.Table``."""
    try:
        import pyarrow.feather as feather
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise ImportError(
            f"reading {path.name} needs pyarrow, which is not installed: pip install pyarrow, "
            "or export the arrays as .npy / .safetensors"
        ) from exc
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return parquet.read_table(path)
        return feather.read_table(path)
    except Exception as exc:  # pyarrow's errors name neither the file nor the fix
        raise ValueError(f"{path} is not a readable {path.suffix} table ({exc})") from exc


def _pick(names: Sequence[str], key: str | None, defaults: Sequence[str], what: str, where: Path):
    """The column / tensor ``key``, else the first of ``defaults`` present (None if none)."""
    if key is not None:
        if key not in names:
            raise ValueError(f"{where} has no {what} named {key!r}; it has {sorted(names)[:10]}")
        return key
    return next((n for n in defaults if n in names), None)


def _table_matrix(column: Any, name: str, where: Path) -> np.ndarray:
    """A table column of equal-length lists (or fixed-size lists) as an ``[N, d]`` array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks()
    if arr.null_count:
        raise ValueError(f"column {name!r} of {where} has {arr.null_count} missing vectors")
    if pa.types.is_fixed_size_list(arr.type):
        d = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = pc.list_value_length(arr).to_numpy()
        if lengths.size and (lengths != lengths[0]).any():
            raise ValueError(
                f"column {name!r} of {where} holds vectors of different lengths "
                f"({int(lengths.min())}..{int(lengths.max())}): every vector needs d values"
            )
        d = int(lengths[0]) if lengths.size else 0
    else:
        raise ValueError(
            f"column {name!r} of {where} is {arr.type}, not a list of numbers per row: store "
            "each vector as one list (e.g. a pandas column of arrays)"
        )
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(arr), d)


def _load_array(
    path: Path, key: str | None, defaults: Sequence[str], what: str, *, matrix: bool = False
) -> np.ndarray | None:
    """An array from a file; None when a table / safetensors file has no such entry."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:  # e.g. an object array, which would need unpickling
            raise ValueError(f"{path} is not a plain .npy array ({exc})") from exc
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="np") as fh:
                names = list(fh.keys())
                only = [names[0]] if len(names) == 1 and what == "features" else []
                name = _pick(names, key, [*defaults, *only], f"{what} tensor", path)
                return None if name is None else fh.get_tensor(name)
        except SafetensorError as exc:
            raise ValueError(f"{path} is not a readable .safetensors file ({exc})") from exc
    if suffix in TABLE_SUFFIXES:
        table = _read_table(path)
        name = _pick(table.column_names, key, defaults, f"{what} column", path)
        if name is None:
            return None
        column = table.column(name)
        if matrix:
            return _table_matrix(column, name, path)
        return column.to_numpy(zero_copy_only=False)
    if suffix in (".txt", ".csv", ".tsv") and not matrix:
        lines = path.read_text(encoding="utf-8").splitlines()
        return np.asarray([line.strip() for line in lines if line.strip()])
    readable = ARRAY_SUFFIXES + TABLE_SUFFIXES + (() if matrix else (".txt",))
    raise ValueError(f"cannot read {what} from {path.name}: use one of {', '.join(readable)}")


def _features(features: Any, key: str | None, sources: _Sources) -> np.ndarray:
    path = _as_path(features)
    if path is None:
        x = check_features(features, "features")
        sources.record_array("features", x)
        return x
    x = _load_array(_existing(path, "features"), key, FEATURE_KEYS, "features", matrix=True)
    if x is None:
        raise ValueError(
            f"{path} has no features column or tensor ({', '.join(FEATURE_KEYS)}): name it "
            "with features_key"
        )
    sources.record_file("features", path)
    return check_features(x, f"features in {path.name}")


def _column(
    value: Any,
    fallback: Path | None,
    key: str | None,
    defaults: Sequence[str],
    what: str,
    sources: _Sources,
) -> np.ndarray | None:
    """Labels or sample ids: given, read from their own file, or from the features file."""
    path = _as_path(value)
    if value is not None and path is None:
        array = np.asarray(value)
        sources.record_array(what, array)
        return array
    source = path or fallback
    if source is None or (path is None and source.suffix.lower() == ".npy"):
        return None
    array = _load_array(_existing(source, what), key, defaults, what)
    if array is not None and path is not None:
        sources.record_file(what, path)
    return array


def _names_list(value: Any, what: str, sources: _Sources) -> list[str] | None:
    """Class names from a list, a ``.json`` list or a ``.txt`` file (one per line)."""
    path = _as_path(value)
    if value is None:
        return None
    if path is None:
        names = [str(v) for v in value]
    else:
        _existing(path, what)
        sources.record_file(what, path)
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise ValueError(f"{path} must hold one JSON list of {what}")
            names = [str(v) for v in data]
        else:
            text = path.read_text(encoding="utf-8").splitlines()
            names = [line.strip() for line in text if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} must be distinct, got a repeated name in {names[:10]}")
    if path is None:
        sources.record_array(what, np.asarray(names))
    return names


# --------------------------------------------------------------------------- labels


def _label_indices(
    raw: np.ndarray, n: int, names: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Labels as int64 indices into the class list, and that list (names)."""
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.shape[0] != n:
        raise ValueError(
            f"labels must be 1-D with one label per feature row ({n}), got {raw.shape}"
        )
    if raw.dtype.kind in "USO":
        text = raw.astype(str)
        classes = names if names is not None else sorted(set(text.tolist()))
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(text.tolist()) - lookup.keys())
        if unknown:
            raise ValueError(
                f"labels {unknown[:5]} are not among the class names: add them to class_names"
            )
        return np.fromiter((lookup[t] for t in text), dtype=np.int64, count=n), list(classes)
    if raw.dtype.kind not in "iu":
        raise TypeError(
            f"labels must be integer class indices or class names, got dtype {raw.dtype} "
            "(float labels are refused, not rounded)"
        )
    y = raw.astype(np.int64)
    if n and y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {y.min()}")
    if names is None:
        names = [str(c) for c in range(int(y.max()) + 1 if n else 0)]
    elif n and y.max() >= len(names):
        raise ValueError(
            f"labels go up to {y.max()} but class_names lists {len(names)} classes: give one "
            "name per class index"
        )
    return y, names


def _query_mask(query: Any, labels: np.ndarray, seed: int, sources: _Sources) -> np.ndarray:
    """A boolean query mask from a mask, indices, a file of either, or a per-class fraction."""
    n = labels.shape[0]
    if isinstance(query, float):
        if not 0 < query < 1:
            raise ValueError(f"a query fraction must lie in (0, 1), got {query}")
        rng = np.random.default_rng(seed)
        # Rank every sample within its class by a random key; the first share of each class
        # becomes queries (class-stratified, at least one query per class).
        order = np.lexsort((rng.random(n), labels))
        counts = np.bincount(labels)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(starts, counts)
        take = np.maximum(1, np.round(query * counts).astype(np.int64))
        mask = rank < take[labels]
        sources.digests["query"] = f"fraction {query!r}, seed {seed}"
    else:
        path = _as_path(query)
        raw = _load_array(_existing(path, "query"), None, (), "query") if path else query
        raw = np.asarray(raw)
        if raw.dtype == bool:
            if raw.shape != (n,):
                raise ValueError(f"a query mask needs one entry per sample ({n}), got {raw.shape}")
            mask = raw
        elif raw.dtype.kind in "iu" and raw.ndim == 1:
            if raw.size and (raw.min() < 0 or raw.max() >= n):
                raise ValueError(f"query indices must lie in 0..{n - 1}")
            mask = np.zeros(n, dtype=bool)
            mask[raw] = True
        else:
            raise TypeError(
                "query must be a boolean mask, integer row indices, a file of either, or a "
                f"fraction; got dtype {raw.dtype}"
            )
        if path is not None:
            sources.record_file("query", path)
        else:
            sources.record_array("query", mask)
    if mask.all() or not mask.any():
        raise ValueError("the query split must leave samples on both sides (query and database)")
    return mask


# --------------------------------------------------------------------------- writing


def _nesting(kind: str, nesting: Sequence[int] | None, d: int) -> list[int]:
    if kind == "ff":
        if nesting is not None and list(nesting) != [d]:
            raise ValueError(f"an 'ff' embedding is analysed at its full size: nesting [{d}]")
        return [d]
    if nesting is None:
        return sorted({2**e for e in range(int(np.log2(d)) + 1)} | {d})
    sizes = check_nesting(nesting)
    if sizes[-1] > d:
        raise ValueError(f"nesting goes up to {sizes[-1]} but the features have d = {d}")
    return sizes


def _write_features(tmp: Path, x: np.ndarray, rows: np.ndarray, dtype_name: str) -> dict:
    """Copy the selected rows in blocks; float16 falls back to float32 when out of range."""
    absmax = 0.0
    block = max(1, _COPY_ELEMENTS // max(1, x.shape[1]))
    for lo in range(0, rows.size, block):
        absmax = max(absmax, float(np.abs(x[rows[lo : lo + block]]).max(initial=0.0)))
    fits = dtype_name == "float16" and absmax <= _FLOAT16_MAX
    dtype = np.float16 if fits else np.float32
    out = open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=(rows.size, x.shape[1]))
    for lo in range(0, rows.size, block):
        out[lo : lo + block] = x[rows[lo : lo + block]]
    out.flush()
    del out
    return {
        "features_dtype": np.dtype(dtype).name,
        "features_dtype_requested": dtype_name,
        "features_max_abs": absmax,
    }


def _write_cache(
    cache_dir: Path,
    x: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    meta: dict[str, Any],
) -> EmbeddingCache:
    """One cache of ``rows`` at ``cache_dir``: reused when its key matches, else (re)written
    through the store's staging, manifest and atomic install."""
    provenance = {**meta["provenance"], "num_samples": int(rows.size)}
    key = hash_json(provenance)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with locked(sibling(cache_dir, "lock"), cache_dir):
        if (cache_dir / MANIFEST).is_file():
            try:
                existing = open_cache(cache_dir)
                if existing.manifest.get("key") == key:
                    existing.verify()
                    return existing
            except (ValueError, OSError):  # unreadable or damaged: replaced below
                pass
        check_replaceable(cache_dir)
        remove_leftovers(cache_dir, keep=cache_dir)
        tmp = sibling(cache_dir, f"tmp-{key[:16]}-{os.getpid()}")
        started = time.perf_counter()
        try:
            tmp.mkdir()
            precision = _write_features(tmp, x, rows, meta["features_dtype"])
            write_array(tmp, "labels", labels[rows])
            width = max((len(s) for s in ids[rows].tolist()), default=1) or 1
            write_array(tmp, "sample_ids", ids[rows].astype(f"<U{width}"))
            arrays = {path.stem: describe(path) for path in sorted(tmp.glob("*.npy"))}
            manifest = {
                "format": FORMAT,
                "key": key,
                "build_id": uuid.uuid4().hex,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "provenance": provenance,
                "model": {
                    "model_id": meta["model_id"],
                    "source": "imported",
                    "heads": False,
                    "checkpoint_sha256": None,
                    "kind": provenance["kind"],
                    "nesting": provenance["nesting"],
                    "feature_dim": int(x.shape[1]),
                    "num_classes": len(meta["class_names"]),
                    "config": {},
                },
                "dataset": {
                    "name": meta["dataset"],
                    "split": provenance["split"],
                    "fingerprint": provenance["inputs"].get("labels"),
                    "num_samples": int(rows.size),
                    "class_subset": None,
                },
                "class_names": meta["class_names"],
                "class_ids": meta["class_ids"],
                "hierarchy": meta["hierarchy"],
                "sources": meta["sources"],
                "precision": precision,
                "build": {"imported": True, "seconds": round(time.perf_counter() - started, 3)},
                "versions": library_versions(),
                "arrays": arrays,
            }
            # The store's sealing order: arrays flushed, manifest last, then the atomic swap.
            for spec in arrays.values():
                fsync_file(tmp / spec["file"])
            write_manifest(tmp, manifest)
            fsync_dir(tmp)
            install(tmp, cache_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    cache = open_cache(cache_dir)
    if cache.manifest.get("key") != key:
        raise CacheCorruptedError(f"{cache_dir} was replaced while importing into it; retry")
    return cache


# --------------------------------------------------------------------------- public API


def import_embeddings(
    features: PathLike | np.ndarray,
    labels: PathLike | np.ndarray | Sequence[Any] | None,
    out_dir: PathLike,
    *,
    kind: ImportKind = "mrl",
    nesting: Sequence[int] | None = None,
    class_names: Sequence[str] | PathLike | None = None,
    superclasses: Mapping[str, str] | PathLike | None = None,
    sample_ids: Sequence[str] | PathLike | np.ndarray | None = None,
    split: str = "test",
    query: np.ndarray | Sequence[int] | PathLike | float | None = None,
    dataset: str | None = None,
    model_id: str | None = None,
    features_key: str | None = None,
    labels_key: str | None = None,
    ids_key: str | None = None,
    features_dtype: FeaturesDtype = "float32",
    seed: int = 0,
) -> dict[str, EmbeddingCache]:
    """Import ``features [N, d]`` and their labels as a head-less cache (module docstring).

    Writes ``out_dir/<split>`` (one cache), or ``out_dir/query`` and ``out_dir/database``
    when ``query`` divides the samples; returns ``{folder name: cache}``. ``model_id``
    (default ``out_dir``'s name) and ``dataset`` label the manifest. Features are stored
    as float32 (exactly as given) unless ``features_dtype="float16"``. Re-importing the same
    inputs returns the existing caches; the store's lock keeps concurrent imports apart.
    """
    kind = check_choice(kind, IMPORT_KINDS, "kind")
    check_choice(features_dtype, ("float16", "float32"), "features_dtype")
    seed = check_int(seed, "seed")
    split = str(split)
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise ValueError(f"split={split!r} cannot name a folder: give a name without slashes")
    out = Path(out_dir)
    sources = _Sources()
    x = _features(features, features_key, sources)
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"features have shape {x.shape}: nothing to import")
    fallback = _as_path(features)
    raw_labels = _column(labels, fallback, labels_key, LABEL_KEYS, "labels", sources)
    if raw_labels is None:
        raise ValueError(
            "no labels: pass labels (an array or file), or a features table / safetensors "
            f"file with a {' / '.join(LABEL_KEYS)} entry (labels_key names another)"
        )
    names = _names_list(class_names, "class_names", sources)
    y, names = _label_indices(raw_labels, n, names)
    raw_ids = _column(sample_ids, fallback, ids_key, ID_KEYS, "sample_ids", sources)
    if raw_ids is None:
        ids = np.asarray([f"index/{i}" for i in range(n)])
    else:
        ids = np.asarray(raw_ids).astype(str)
        if ids.shape != (n,):
            raise ValueError(f"sample_ids must give one id per sample ({n}), got {ids.shape}")
        if np.unique(ids).size != n:
            raise ValueError("sample_ids must be distinct: each names one sample")
    hierarchy = None
    if superclasses is not None:
        if _as_path(superclasses) is not None:
            sources.record_file("superclasses", _existing(Path(superclasses), "superclasses"))
        else:
            superclasses = {str(k): str(v) for k, v in superclasses.items()}
            sources.digests["superclasses"] = hash_json(superclasses)
        hierarchy = hierarchy_by_id(superclasses, names, names)
        if not hierarchy:
            raise ValueError(
                "superclasses name none of the classes: key them by class name or index name"
            )
    sizes = _nesting(kind, nesting, d)
    meta = {
        "model_id": model_id or out.name,
        "dataset": dataset,
        "class_names": names,
        "class_ids": names,
        "hierarchy": hierarchy,
        "features_dtype": features_dtype,
        "sources": sources.paths,
    }
    base = {
        "format": FORMAT,
        "source": "imported",
        "heads": False,
        "kind": kind,
        "nesting": sizes,
        "features_dtype": features_dtype,
        "split": split,
    }
    if query is None:
        parts = {split: np.arange(n)}
    else:
        mask = _query_mask(query, y, seed, sources)
        parts = {"query": np.flatnonzero(mask), "database": np.flatnonzero(~mask)}
    caches = {}
    for part, rows in parts.items():
        provenance = {**base, "part": part, "inputs": dict(sources.digests)}
        caches[part] = _write_cache(out / part, x, rows, y, ids, {**meta, "provenance": provenance})
    return caches
