"""Few-shot NCM and FLUID: the vectorized library against straightforward loops.

    .venv/bin/python benchmarks/bench_fewshot_fluid.py            # the issue's sizes
    .venv/bin/python benchmarks/bench_fewshot_fluid.py --quick    # a smoke run

Synthetic float32 features (Gaussian class clusters, ReLU'd like pooled CNN features),
d = 2048, nesting 8..2048:

* few-shot: N = 10,000 samples of 100 classes, 1,000 episodes per (ways, shots) setting;
  the baseline loops over episodes and sizes with plain numpy (one NCM per episode);
* FLUID: a 50,000-step Zipf stream over 100 pretrain + 100 novel classes, pretrain means
  initialised from 10,000 training samples; the baseline is the literal definition (predict
  with the current means, then update), run on a prefix of the stream and extrapolated
  linearly (its cost per step is constant), since the whole stream would take minutes.

Both baselines are checked to give the library's results on what they run. Each part also
times its error bars (1,000 bootstrap resamples: of the episodes, of the stream's samples),
which the tables carry as ``ci_low`` / ``ci_high``. The library runs BLAS on one thread
(see ``fewshot.ncm.single_threaded``); each baseline is timed twice, with numpy's default
BLAS threads (as usually written) and on one thread (the same conditions).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mrl_analysis.core.stats import mean_ci
from mrl_analysis.fewshot.episodes import episode_accuracy, sample_episodes
from mrl_analysis.fewshot.fluid import fluid_accuracy, fluid_predictions
from mrl_analysis.fewshot.ncm import single_threaded
from mrl_analysis.fewshot.stream import FluidStream
from mrl_analysis.models.network import default_nesting

#: The issue's targets on this machine: 1,000 episodes x all sizes, and the whole stream.
FEWSHOT_TARGET_S = 10.0
FLUID_TARGET_S = 30.0


def clusters(n: int, n_classes: int, d: int, rng, labels=None) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(n_classes, d)).astype(np.float32)
    labels = rng.integers(0, n_classes, n) if labels is None else labels
    x = 0.3 * centers[labels] + rng.normal(size=(n, d)).astype(np.float32)
    return np.maximum(x, 0.0), labels


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


# --------------------------------------------------------------------------- few-shot


def fewshot_loop(x, episodes, nesting) -> np.ndarray:
    """Straightforward NCM: one episode and one size at a time."""
    out = np.empty((len(nesting), episodes.n_episodes))
    truth = np.repeat(np.arange(episodes.ways), episodes.queries)
    for e in range(episodes.n_episodes):
        sup, qry = x[episodes.support[e]], x[episodes.query[e].ravel()]
        for g, m in enumerate(nesting):
            means = unit(sup[..., :m]).mean(axis=1)
            scores = unit(qry[:, :m]) @ unit(means).T
            out[g, e] = np.mean(scores.argmax(axis=1) == truth)
    return out


def bench_fewshot(n: int, d: int, n_classes: int, n_episodes: int, rng) -> None:
    x, labels = clusters(n, n_classes, d, rng)
    nesting = default_nesting(d, 8)
    print(f"few-shot: N={n}, d={d}, {n_classes} classes, nesting {nesting}")
    for ways, shots in ((5, 5), (10, 1)):
        episodes = sample_episodes(
            labels, ways=ways, shots=shots, queries=15, n_episodes=n_episodes, seed=0
        )
        t0 = time.perf_counter()
        fast = episode_accuracy(x, episodes, nesting, progress=False)
        t_fast = time.perf_counter() - t0
        t_loop, slow = timed(fewshot_loop, x, episodes, nesting)
        agree = np.mean(np.isclose(fast, slow))
        print(
            f"  {ways}-way {shots}-shot, {n_episodes} episodes x {len(nesting)} sizes: "
            f"vectorized {t_fast:.2f} s; loop {t_loop[0]:.2f} s (default threads, "
            f"{t_loop[0] / t_fast:.1f}x), {t_loop[1]:.2f} s (1 thread, {t_loop[1] / t_fast:.1f}x); "
            f"episode accuracies equal: {agree:.1%}"
        )
        t0 = time.perf_counter()
        mean_ci(fast, 1000)
        print(f"  bootstrap interval over the episodes: {time.perf_counter() - t0:.3f} s")
        print(f"  target <= {FEWSHOT_TARGET_S:.0f} s: {verdict(t_fast, FEWSHOT_TARGET_S)}")


# --------------------------------------------------------------------------- FLUID


def fluid_loop(x, stream, nesting, init_x, init_y) -> np.ndarray:
    """The literal definition: predict with the current means, then update them."""
    classes = stream.classes
    target = np.searchsorted(classes, stream.labels)
    out = np.empty((len(nesting), len(stream)), dtype=np.int64)
    for g, m in enumerate(nesting):
        sums = np.zeros((classes.size, m))
        counts = np.zeros(classes.size)
        keep = np.isin(init_y, stream.pretrain_classes)
        np.add.at(sums, np.searchsorted(classes, init_y[keep]), unit(init_x[keep, :m]))
        np.add.at(counts, np.searchsorted(classes, init_y[keep]), 1)
        for t in range(len(stream)):
            q = unit(x[stream.indices[t], :m].astype(np.float64))
            known = counts > 0
            means = sums[known] / counts[known, None]
            norms = np.linalg.norm(means, axis=1)
            scores = (means @ q) / np.where(norms > 0, norms, 1.0)
            out[g, t] = classes[known][np.argmax(scores)] if known.any() else -1
            sums[target[t]] += q
            counts[target[t]] += 1
    return out


def bench_fluid(n: int, d: int, n_classes: int, n_init: int, prefix: int, rng) -> None:
    weights = (rng.permutation(n_classes) + 1.0) ** -1.0
    labels = rng.choice(n_classes, n, p=weights / weights.sum())
    x, _ = clusters(n, n_classes, d, np.random.default_rng(1), labels=labels)
    pretrain = np.arange(n_classes // 2)
    init_y = np.repeat(pretrain, n_init // pretrain.size)
    init_x, _ = clusters(init_y.size, n_classes, d, np.random.default_rng(1), labels=init_y)
    stream = FluidStream(np.arange(n), labels, pretrain, np.arange(n_classes // 2, n_classes))
    nesting = default_nesting(d, 8)
    print(
        f"FLUID: {n} steps, d={d}, {pretrain.size} pretrain + {n_classes - pretrain.size} novel "
        f"classes (Zipf), {init_y.size} init samples, nesting {nesting}"
    )
    t0 = time.perf_counter()
    fast = fluid_predictions(
        x, stream, nesting, init_features=init_x, init_labels=init_y, progress=False
    )
    t_fast = time.perf_counter() - t0
    head = FluidStream(
        stream.indices[:prefix], stream.labels[:prefix], pretrain, stream.novel_classes
    )
    t_prefix, slow = timed(fluid_loop, x, head, nesting, init_x, init_y)
    agree = np.mean(slow == fast[:, :prefix])
    full = [t * n / prefix for t in t_prefix]
    print(
        f"  vectorized {t_fast:.2f} s for all {n} steps; loop on the first {prefix} steps "
        f"{t_prefix[0]:.2f} s (default threads) / {t_prefix[1]:.2f} s (1 thread), "
        f"extrapolated to all steps ~{full[0]:.0f} s ({full[0] / t_fast:.0f}x) / "
        f"~{full[1]:.0f} s ({full[1] / t_fast:.0f}x); predictions equal on the prefix: "
        f"{agree:.2%}"
    )
    t0 = time.perf_counter()
    fluid_accuracy(fast, stream, nesting, n_boot=1)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    fluid_accuracy(fast, stream, nesting, n_boot=1000)
    t_boot = time.perf_counter() - t0
    print(
        f"  category table {t_plain:.2f} s; with bootstrap intervals over the stream's samples "
        f"{t_boot:.2f} s"
    )
    print(f"  target <= {FLUID_TARGET_S:.0f} s: {verdict(t_fast, FLUID_TARGET_S)}")


def verdict(seconds: float, target: float) -> str:
    return "MET" if seconds <= target else "MISSED"


def timed(fn, *args) -> tuple[tuple[float, float], object]:
    """Wall times of ``fn(*args)`` with default BLAS threads and with one, and its result."""
    t0 = time.perf_counter()
    result = fn(*args)
    t_default = time.perf_counter() - t0
    with single_threaded():
        t0 = time.perf_counter()
        fn(*args)
        t_single = time.perf_counter() - t0
    return (t_default, t_single), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.quick:
        bench_fewshot(n=2000, d=256, n_classes=20, n_episodes=100, rng=rng)
        bench_fluid(n=5000, d=256, n_classes=40, n_init=2000, prefix=500, rng=rng)
    else:
        bench_fewshot(n=10_000, d=2048, n_classes=100, n_episodes=1000, rng=rng)
        bench_fluid(n=50_000, d=2048, n_classes=200, n_init=10_000, prefix=1000, rng=rng)


if __name__ == "__main__":
    main()
