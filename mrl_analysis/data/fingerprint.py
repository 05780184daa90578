"""Fingerprints of dataset files: content digests and listing digests, cached on disk.

A bundle's ``fingerprint`` (part of every embedding cache's key) is built from one of these
digests. Hashing a dataset's files takes seconds to minutes, so every digest is memoised in
memory and in ``$MRL_CACHE_DIR/fingerprints.json`` (default ``~/.cache/mrl-analysis``),
keyed so that a changed file or folder gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

_DIGESTS: dict[str, str] = {}


def _cache_file() -> Path:
    base = os.environ.get("MRL_CACHE_DIR") or Path.home() / ".cache" / "mrl-analysis"
    return Path(base) / "fingerprints.json"


def _cached(key: str, compute: Callable[[], str]) -> str:
    """``compute()`` memoised in memory and in ``$MRL_CACHE_DIR/fingerprints.json``."""
    if key in _DIGESTS:
        return _DIGESTS[key]
    path = _cache_file()
    try:
        disk = json.loads(path.read_text())
    except (OSError, ValueError):
        disk = {}
    if key not in disk:
        disk[key] = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
                json.dump(disk, tmp)
            os.replace(tmp.name, path)
        except OSError:
            pass  # the cache only saves time; an unwritable home just means recomputing
    _DIGESTS[key] = disk[key]
    return disk[key]


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 of the files' contents (cached by path, size and mtime)."""
    digests = []
    for p in paths:
        st = p.stat()
        key = f"file:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"

        def compute(p: Path = p) -> str:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            return h.hexdigest()

        digests.append(_cached(key, compute))
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def listing_digest(root: Path, files: Sequence[str]) -> str:
    """sha256 of relative paths (in dataset order) and file sizes.

    The sizes need one ``stat`` per file, so the result is cached under the listing and
    the modification times of the folders holding the files.
    """
    base = str(root.resolve())
    listing = "\n".join(files).encode()
    key = hashlib.sha256(listing)
    key.update(base.encode())
    for d in sorted({f.rpartition("/")[0] for f in files}):
        key.update(f"{d}:{os.stat(os.path.join(base, d)).st_mtime_ns}".encode())

    def compute() -> str:
        sizes = np.fromiter(
            (os.stat(os.path.join(base, f)).st_size for f in files),
            dtype=np.int64,
            count=len(files),
        )
        return hashlib.sha256(listing + sizes.tobytes()).hexdigest()

    return _cached(f"listing:{key.hexdigest()}", compute)
