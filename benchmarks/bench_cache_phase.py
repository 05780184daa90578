"""The demo's caching phase, timed: ``build_caches`` + ``build_subset_caches`` as
``app/demo.py`` calls them, and embedding with 1 process against 2 under torchrun.

Runs into fresh temporary cache folders with the study's trained checkpoints (``make demo``
trains them), inside the heavy lock on a shared machine::

    flock /tmp/mrl-heavy.lock .venv/bin/python benchmarks/bench_cache_phase.py \\
        [--study demo] [--flip] [--processes] [--reps 1]

``--flip`` also caches the eval split with flipped inputs (notebook 03's test-time
augmentation) in the same pass, as a study that runs notebook 03 needs. ``--processes``
times ``mrl-analysis embed`` of one model on every cache split: one process (torch's
default threads) against ``torchrun --nproc_per_node=2`` (one thread each), and checks
that both give the same arrays. Prints the machine (CPU model, AVX-512 or not) first.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrl_analysis.app.studies import load_study
from mrl_analysis.cache.experiment import build_caches, build_subset_caches
from mrl_analysis.cache.reader import open_cache

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line),
        platform.processor() or "unknown CPU",
    )
    avx512 = "AVX-512" if "avx512f" in flags else "no AVX-512"
    load = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} cores, {avx512}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; load average {load:.2f} at start"
    )


def caching_phase(study: str, flip: bool) -> float:
    """Seconds of the phase, into a fresh cache root; prints each call."""
    spec = load_study(study)
    splits = list(spec.cache_splits)
    sets = [(spec.models, build_caches)]
    if spec.novel_models is not None:
        sets.append((spec.novel_models, build_subset_caches))
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=ROOT / "data") as tmp:
        common = {"cache_root": Path(tmp), "data_root": spec.data_root, "progress": False}
        total = 0.0
        for i, (model_set, build) in enumerate(sets):
            models = model_set.paths()
            missing = [str(p) for p in models.values() if not p.exists()]
            if missing:
                raise SystemExit(f"train the study's models first (make demo): {missing}")
            extra = {"hflip_splits": [spec.eval_split]} if flip and i == 0 else {}
            t0 = time.perf_counter()
            build(models, spec.dataset, splits, **common, **extra)
            seconds = time.perf_counter() - t0
            total += seconds
            views = "+".join([*splits, *(f"{s}-hflip" for s in extra.get("hflip_splits", []))])
            print(f"  {build.__name__}({len(models)} models, {views}): {seconds:.1f}s")
    return total


def processes(study: str) -> None:
    """One model's ``embed``: 1 process against torchrun with 2; same arrays."""
    spec = load_study(study)
    name, checkpoint = next(iter(spec.models.paths().items()))
    args = ["embed", "-m", f"{name}={checkpoint}", "--dataset", spec.dataset]
    args += ["--split", *spec.cache_splits]
    if spec.data_root is not None:
        args += ["--data-root", str(spec.data_root)]
    roots = {}
    with tempfile.TemporaryDirectory(prefix="bench-procs-", dir=ROOT / "data") as tmp:
        for label, launcher, env in (
            ("1 process", [sys.executable, "-m", "mrl_analysis.cli"], {}),
            (
                "2 processes (torchrun)",
                [sys.executable, "-m", "torch.distributed.run", "--standalone"]
                + ["--nproc_per_node=2", "-m", "mrl_analysis.cli"],
                {"OMP_NUM_THREADS": "1"},
            ),
        ):
            roots[label] = Path(tmp) / label.split()[0]
            command = [*launcher, *args, "--cache-root", str(roots[label])]
            t0 = time.perf_counter()
            proc = subprocess.run(
                command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
            )
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
            caches = [open_cache(p.parent) for p in roots[label].rglob("manifest.json")]
            inner = sum(c.manifest["build"]["seconds"] for c in caches)
            images = sum(c.num_samples for c in caches)
            print(
                f"  {label}: {seconds:.1f}s wall (incl. start-up), {inner:.1f}s embedding "
                f"{images} images of {name} ({images / inner:.0f} img/s)"
            )
        one, two = (sorted(r.rglob("manifest.json")) for r in roots.values())
        same = all(
            np.array_equal(open_cache(a.parent).features(), open_cache(b.parent).features())
            and np.array_equal(open_cache(a.parent).logits(), open_cache(b.parent).logits())
            for a, b in zip(one, two, strict=True)
        )
        print(f"  arrays of 1 and 2 processes bit-identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo")
    parser.add_argument("--flip", action="store_true", help="also the flipped eval caches")
    parser.add_argument("--processes", action="store_true", help="1 vs 2 processes")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for rep in range(args.reps):
        print(f"caching phase of study {args.study!r}{' with flips' if args.flip else ''}:")
        print(f"  total {caching_phase(args.study, args.flip):.1f}s (rep {rep + 1})")
    if args.processes:
        print(f"embed, 1 vs 2 processes (study {args.study!r}, first model):")
        processes(args.study)


if __name__ == "__main__":
    main()
