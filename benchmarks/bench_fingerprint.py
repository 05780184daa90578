"""Cost of the image-folder fingerprint (paths, sizes and mtimes of every file), per file.

``listing_digest`` stats every file on every ``get_dataset`` call (an edit in place changes
a file's mtime but not its folder's, so nothing can be cached). This builds a synthetic
ImageNet-like tree (``--classes`` folders, ``--files`` empty ``.JPEG`` files in all) in a
temporary folder, times the folder scan ``get_dataset`` does anyway and the fingerprint
alone (median of ``--reps``, warm page cache), and extrapolates to ImageNet's 1,281,167
training images. ``--root`` times an existing tree instead (e.g. Tiny-ImageNet's train/).

    .venv/bin/python benchmarks/bench_fingerprint.py [--files 200000] [--classes 1000]
    .venv/bin/python benchmarks/bench_fingerprint.py --root ../shared/data/tiny-imagenet-200/train
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from mrl_analysis.data.fingerprint import listing_digest

IMAGENET_TRAIN = 1_281_167


def build_tree(root: Path, files: int, classes: int) -> None:
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir()
        for i in range(c, files, classes):
            (folder / f"n{c:08d}_{i}.JPEG").touch()


def timed(fn, reps: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--root", type=Path, help="time this existing class-folder tree")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = args.root
        if root is None:
            root = Path(tmp)
            start = time.perf_counter()
            build_tree(root, args.files, args.classes)
            print(f"built {args.files} files in {time.perf_counter() - start:.1f}s under {root}")
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())

        def scan() -> list[str]:
            samples = make_dataset(
                str(root), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS, allow_empty=True
            )
            return [p[len(str(root)) + 1 :] for p, _ in samples]

        t_scan, files = timed(scan, args.reps)
        t_digest, _ = timed(lambda: listing_digest(root, files), args.reps)
        n = len(files)
        rate = n / t_digest
        print(f"{n} files in {len(classes)} folders (median of {args.reps}, warm page cache)")
        print(f"  folder scan (get_dataset's own): {t_scan:.2f}s  {n / t_scan:,.0f} files/s")
        print(f"  fingerprint (stat + sha256):    {t_digest:.2f}s  {rate:,.0f} files/s")
        print(
            f"  ImageNet train ({IMAGENET_TRAIN:,} files): fingerprint "
            f"~{IMAGENET_TRAIN / rate:.1f}s on top of a ~{IMAGENET_TRAIN * t_scan / n:.1f}s scan"
        )


if __name__ == "__main__":
    main()
