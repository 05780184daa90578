"""Regenerate ``mrl_analysis/data/wordnet_ancestors.json`` from ImageNet's metadata.

The table keeps the ImageNet-1K classes, the Tiny-ImageNet wnids and all their WordNet
ancestors (parents and synonyms), plus the ImageNet-1K class index. Run from the repo root:

    .venv/bin/python scripts/build_wordnet_table.py \
        [--meta ../shared/data/imagenet-meta] \
        [--tiny-wnids ../shared/data/tiny-imagenet-200/wnids.txt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrl_analysis.data.wordnet import TABLE_PATH, WordNet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", type=Path, default=SHARED / "imagenet-meta")
    parser.add_argument(
        "--tiny-wnids", type=Path, default=SHARED / "tiny-imagenet-200" / "wnids.txt"
    )
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    full = WordNet.from_files(
        args.meta / "wordnet.is_a.txt",
        args.meta / "words.txt",
        args.meta / "imagenet_class_index.json",
        args.tiny_wnids,
    )
    keep = [w for w, _ in full.imagenet1k] + full.tiny_imagenet
    out = full.restricted_to(keep).save(args.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(set(keep))} classes)")
    return out


if __name__ == "__main__":
    main()
