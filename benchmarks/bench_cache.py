"""Extraction throughput of ``embed_dataset`` against a bare ``torch.no_grad()`` forward.

Both run the same ResNet-18 (MRL head, 1 input channel) over the same ``DataLoader``
(batch 256, no workers) of the Fashion-MNIST test split (10k images) when
``mrl_analysis.data.registry`` can load it, else of ``--n`` random 28x28 images. What the cache
adds is the feature / logits copies, chunk files, the assembled arrays, checksums, the
manifest and the weights hash; the target is at most 10% over the bare forward.

Runs are interleaved (the order alternates each repetition) so that load drifting on a
shared machine hits both sides alike; the ratio of the medians is reported.

    .venv/bin/python benchmarks/bench_cache.py [--reps 3] [--n 10000] [--random]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, TensorDataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.models.network import build_model


def load_bundle(n: int, random: bool):
    if not random:
        try:
            from mrl_analysis.data.registry import get_dataset

            return get_dataset("fashion-mnist", "test"), "Fashion-MNIST test"
        except (ImportError, FileNotFoundError, ValueError) as exc:
            print(f"Fashion-MNIST unavailable ({exc}); using random images")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    bundle = SimpleNamespace(
        dataset=TensorDataset(images, labels),
        targets=labels.numpy(),
        fingerprint=f"random-{n}",
        split="test",
    )
    return bundle, f"{n} random 28x28 images"


def bare_forward(model: torch.nn.Module, dataset, batch_size: int) -> None:
    """The baseline: what any script does to run a model over a dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for images, _ in loader:
            model(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000, help="random images (fallback)")
    parser.add_argument("--random", action="store_true", help="random images, not F-MNIST")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model("resnet18", 10, "mrl", in_channels=1).eval()
    bundle, what = load_bundle(args.n, args.random)
    print(f"resnet18 (MRL, nesting {model.nesting}) on {what}, {torch.get_num_threads()} threads")
    bare_forward(model, torch.utils.data.Subset(bundle.dataset, range(512)), args.batch_size)

    bare, cached, reuse = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ("bare", "cache") if rep % 2 == 0 else ("cache", "bare")
            for side in order:
                start = time.perf_counter()
                if side == "bare":
                    bare_forward(model, bundle.dataset, args.batch_size)
                    bare.append(time.perf_counter() - start)
                else:
                    target = Path(tmp) / f"run{rep}"
                    embed_dataset(model, bundle, target, batch_size=args.batch_size, progress=False)
                    cached.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    embed_dataset(model, bundle, target, batch_size=args.batch_size, progress=False)
                    reuse.append(time.perf_counter() - start)
            print(
                f"rep {rep}: bare {bare[-1]:.2f}s  embed_dataset {cached[-1]:.2f}s  "
                f"ratio {cached[-1] / bare[-1]:.3f}  reuse {reuse[-1] * 1000:.0f} ms"
            )

    n = len(bundle.dataset)
    ratio = statistics.median(cached) / statistics.median(bare)
    print(
        f"bare forward: {n / statistics.median(bare):.0f} img/s; "
        f"embed_dataset: {n / statistics.median(cached):.0f} img/s"
    )
    paired = statistics.median(c / b for c, b in zip(cached, bare, strict=True))
    print(f"embed_dataset / bare forward time ratio (medians): {ratio:.3f} (target <= 1.10)")
    print(f"median of the per-repetition ratios: {paired:.3f}")
    print(f"reusing the finished cache: {statistics.median(reuse) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
