"""Reading a cache: memory-mapped arrays and the :class:`EmbeddingCache` views on them."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mrl_analysis.cache.store import (
    FORMAT,
    MANIFEST,
    CacheCorruptedError,
    manifest_sha256,
    sha256_file,
)
from mrl_analysis.core.checks import check_int
from mrl_analysis.core.numeric import predictions, softmax


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
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(
            f"{path} is in cache format {found!r}, this version reads {FORMAT!r}: {_fix_hint(path)}"
        )
    stored = manifest.get("manifest_sha256")
    if stored is None:
        raise CacheCorruptedError(
            f"{file} carries no manifest_sha256 (written by an older mrl-analysis), so its "
            f"nesting and class lists cannot be trusted: {_fix_hint(path)} (build_caches "
            "does so by itself)"
        )
    if stored != manifest_sha256(manifest):
        raise CacheCorruptedError(
            f"{file} was edited after the cache was built: its content no longer matches "
            "its manifest_sha256, and an edited nesting or class list would mislabel the "
            f"arrays: {_fix_hint(path)}"
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
    # An imported cache (cache/importer.py) declares that it has no heads: no logits.
    heads = manifest.get("provenance", {}).get("heads", True)
    missing = {"features", "labels", "sample_ids", *(["logits"] if heads else [])} - arrays.keys()
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


class HeadlessCacheError(ValueError):
    """Logits were asked of a cache imported from features alone (no classifier heads)."""


class EmbeddingCache:
    """A model's outputs over one dataset split, memory-mapped from disk (layout:
    :mod:`mrl_analysis.cache.store`).

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
        if not self.has_heads:
            return len(self.manifest["class_names"])
        return int(self._arrays["logits"].shape[2])

    @property
    def has_heads(self) -> bool:
        """False for a cache imported from someone's features (no logits, no heads)."""
        return "logits" in self._arrays

    def _require_heads(self) -> None:
        if not self.has_heads:
            raise HeadlessCacheError(
                f"{self.path} was imported from features alone: it has no classifier heads, "
                "hence no logits. Logit-based analyses (linear accuracy, oracle, cascades, "
                "Grad-CAM) need a model's cache; feature-based ones (k-NN, few-shot, FLUID, "
                "retrieval, the Matryoshka diagnostic) work on it"
            )

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
        return check_int(truncate_dim, "truncate_dim", low=1, high=self.feature_dim)

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
        """Logits of every nesting size, float32 ``[G, N, C]`` (read-only, memory-mapped).

        Raises :class:`HeadlessCacheError` for an imported cache (no heads)."""
        self._require_heads()
        return self._arrays["logits"]

    def probabilities(self) -> np.ndarray:
        """Softmax of :meth:`logits` over classes, float32 ``[G, N, C]``."""
        logits = self.logits()
        out = np.empty(logits.shape, dtype=np.float32)
        for g in range(logits.shape[0]):  # one size at a time bounds the temporaries
            out[g] = softmax(logits[g])
        return out

    def probabilities_at(self, truncate_dim: int) -> np.ndarray:
        """Softmax of :meth:`logits_at` over classes, float32 ``[N, C]``: one size only, so
        a large eval set never needs the full ``[G, N, C]`` array."""
        return softmax(self.logits_at(truncate_dim))

    def predictions(self) -> np.ndarray:
        """Predicted class per nesting size and sample, int64 ``[G, N]``."""
        return predictions(self.logits())

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
        self._require_heads()
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
            if sha256_file(file) != spec["sha256"]:
                raise CacheCorruptedError(
                    f"{file.name} in {self.path} does not match its sha256 checksum in "
                    f"{MANIFEST} (the file is corrupted): {_fix_hint(self.path)}"
                )
