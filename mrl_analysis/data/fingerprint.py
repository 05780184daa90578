"""Fingerprints of dataset files: content digests and listing digests.

A bundle's ``fingerprint`` (part of every embedding cache's key) is built from one of these
digests, so that a changed dataset never reuses stale embeddings.

* :func:`file_digest` (Fashion-MNIST, CIFAR-100: a few large files) hashes the contents;
  that takes seconds, so it is memoised in memory and in
  ``$MRL_CACHE_DIR/fingerprints.json`` (default ``~/.cache/mrl-analysis``), keyed by each
  file's path, size and mtime.
* :func:`listing_digest` (image folders, Tiny-ImageNet, ImageNet: up to millions of small
  files) hashes each file's path, size and mtime, fresh on every call.
"""

from __future__ import annotations

import hashlib
import itertools
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
    """sha256 of relative paths (in dataset order), file sizes and modification times.

    Image datasets are too large to hash their contents, so a file counts as unchanged while
    its path, size and mtime are. One ``stat`` per file on every call, nothing cached: an
    edit in place changes the file's mtime but not its folder's, so only the files
    themselves can tell (ImageNet's 1.28M files: see ``benchmarks/bench_fingerprint.py``).
    A file name that is not valid UTF-8 is an error naming it.
    """
    base = str(root.resolve()) + os.sep
    try:
        listing = "\n".join(files).encode()
    except UnicodeEncodeError:
        raise ValueError(_not_utf8(root, files)) from None
    # One pass, no per-file Python objects kept: ~200k files/s on a warm page cache.
    stats = np.fromiter(
        itertools.chain.from_iterable(
            (st.st_size, st.st_mtime_ns) for st in map(os.stat, (base + f for f in files))
        ),
        dtype=np.int64,
        count=2 * len(files),
    )
    return hashlib.sha256(listing + stats.tobytes()).hexdigest()


def _not_utf8(root: Path, files: Sequence[str]) -> str:
    """The error message for file names that are not valid UTF-8 (undecodable bytes)."""
    bad = []
    for f in files:
        try:
            f.encode()
        except UnicodeEncodeError:
            # os.fsdecode keeps undecodable bytes as surrogates; show them as \xNN.
            bad.append(os.fsencode(f).decode("utf-8", "backslashreplace"))
    shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
    return (
        f"{len(bad)} file name(s) under {root} are not valid UTF-8: {shown}. Sample ids, "
        "caches and tables store names as UTF-8 text: rename these files (e.g. with "
        "`convmv -f latin1 -t utf8 -r --notest <folder>`), then load the dataset again"
    )
