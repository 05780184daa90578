"""Benchmark: the cascade study and the oracle against per-sample Python loops.

Synthetic probabilities ``[9, N, C]`` (default N = 50,000, C = 1000, nesting 8..2048) are
reduced once to top-1 predictions, confidence and correctness ``[G, N]`` (timed apart:
both implementations need it). Then, on those arrays:

* cascade study: S = 30 splits (10,000 held out), 100 thresholds, every cap; the
  baseline is the authors' algorithm written one threshold and one sample at a time. It
  runs on ``--baseline-splits`` splits and is scaled to S, since all splits cost the same;
* oracle: oracle accuracy, first-correct shares, expected size and majority vote; the
  baseline loops over samples. Ours also computes bootstrap intervals (1000 resamples over
  the samples) of the oracle, the best size and the gap, timed apart as well.

Times are the best of 3 runs, except the cascade baseline (one run).

Run: ``.venv/bin/python benchmarks/bench_cascade.py [--n 50000] [--classes 1000]``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from mrl_analysis.core.numeric import predictions
from mrl_analysis.routing.cascade import (
    DEFAULT_GRID,
    SplitSettings,
    cascade_study,
    cascade_study_reduced,
    confidence_and_correctness,
)
from mrl_analysis.routing.oracle import first_correct_shares, oracle_bootstrap, oracle_summary

NESTING = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]


def synthetic_probabilities(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs whose accuracy grows with size, with per-sample difficulty."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    difficulty = rng.normal(0.0, 1.0, n).astype(np.float32)
    probs = np.empty((len(NESTING), n, c), dtype=np.float32)
    for g, strength in enumerate(np.linspace(3.0, 5.0, len(NESTING))):
        logits = rng.standard_normal((n, c), dtype=np.float32)
        logits[np.arange(n), labels] += strength - difficulty
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        probs[g] = logits
    return probs, labels


def baseline_cascade(conf, correct, grid, held, evaluate):
    """Per-sample loops (as in the authors' notebook, without the tensor ops)."""
    conf_l, correct_l = conf.tolist(), correct.tolist()
    g = len(conf_l)
    accuracy = np.zeros((len(held), g - 1))
    for s, (h, e) in enumerate(zip(held.tolist(), evaluate.tolist(), strict=True)):
        thresholds = []
        for i in range(g - 1):
            ci, c0, c1 = conf_l[i], correct_l[i], correct_l[i + 1]
            best, best_t = -1, 0.0
            for t in grid.tolist():
                hits = 0
                for n in h:
                    hits += c0[n] if ci[n] > t else c1[n]
                if hits > best:
                    best, best_t = hits, t
            thresholds.append(best_t)
        for cap in range(1, g):
            hits = 0
            for n in e:
                used = cap
                for j in range(cap):
                    if conf_l[j][n] > thresholds[j]:
                        used = j
                        break
                hits += correct_l[used][n]
            accuracy[s, cap - 1] = hits / len(e)
    return accuracy


def baseline_oracle(preds, labels, sizes):
    """Per-sample oracle, first-correct histogram, expected size and majority vote."""
    preds_l, labels_l = preds.T.tolist(), labels.tolist()
    g = len(sizes)
    first = [0] * (g + 1)
    oracle_hits = vote_hits = 0
    size_sum = 0
    for row, y in zip(preds_l, labels_l, strict=True):
        used = g
        for j in range(g):
            if row[j] == y:
                used = j
                break
        first[used] += 1
        oracle_hits += used < g
        size_sum += sizes[min(used, g - 1)]
        counts = Counter(row)
        top = max(counts.values())
        vote = next(p for p in reversed(row) if counts[p] == top)
        vote_hits += vote == y
    n = len(labels_l)
    return oracle_hits / n, [f / n for f in first], size_sum / n, vote_hits / n


def timed(fn, *args, repeat: int = 1, **kwargs):
    """``fn``'s result and its best wall time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--splits", type=int, default=30)
    parser.add_argument("--holdout", type=int, default=10_000)
    parser.add_argument("--baseline-splits", type=int, default=2)
    args = parser.parse_args()

    probs, labels = synthetic_probabilities(args.n, args.classes)
    print(f"probabilities {probs.shape} float32 ({probs.nbytes / 2**30:.2f} GiB)")

    (conf, correct), t_reduce = timed(confidence_and_correctness, probs, labels, NESTING)
    preds, t_preds = timed(predictions, probs)
    print(f"reduction to [G, N] arrays (shared by both): {t_reduce:.2f} s (+ {t_preds:.2f} s)")
    print("accuracy per size:", np.round(correct.mean(axis=1), 3).tolist())

    settings = SplitSettings(n_splits=args.splits, holdout=args.holdout)
    study, t_ours = timed(
        cascade_study_reduced,
        conf,
        correct,
        NESTING,
        repeat=3,
        settings=settings,
        num_classes=args.classes,
    )
    held, evaluate = settings.splits(args.n)
    k = min(args.baseline_splits, args.splits)
    base_acc, t_base = timed(baseline_cascade, conf, correct, DEFAULT_GRID, held[:k], evaluate[:k])
    ours_acc = study.results.pivot(index="split", columns="max_size", values="accuracy")
    assert np.allclose(ours_acc.to_numpy()[:k], base_acc), "cascade results differ"
    t_base_all = t_base * args.splits / k
    print(
        f"cascade study ({args.splits} splits x {DEFAULT_GRID.size} thresholds x "
        f"{len(NESTING)} sizes): ours {t_ours:.3f} s, per-sample loop {t_base_all:.1f} s "
        f"(measured {t_base:.1f} s on {k} splits, scaled) -> {t_base_all / t_ours:.0f}x"
    )

    # The loop computes no intervals: ours is timed with one resample, the intervals apart.
    summary, t_oracle = timed(oracle_summary, preds, labels, NESTING, repeat=3, n_boot=1)
    shares, t_shares = timed(first_correct_shares, preds, labels, NESTING, repeat=3)
    base, t_oracle_base = timed(baseline_oracle, preds, labels, NESTING, repeat=3)
    assert np.isclose(summary["oracle_accuracy"].iloc[0], base[0])
    assert np.allclose(shares["share"], base[1])
    assert np.isclose(summary["oracle_expected_size"].iloc[0], base[2])
    assert np.isclose(summary["majority_vote_accuracy"].iloc[0], base[3])
    t_oracle += t_shares
    _, t_boot = timed(oracle_bootstrap, preds == labels[None, :], repeat=3)
    print(
        f"oracle (N={args.n}, {len(NESTING)} sizes): ours {t_oracle * 1e3:.1f} ms, per-sample "
        f"loop {t_oracle_base:.2f} s -> {t_oracle_base / t_oracle:.0f}x; bootstrap intervals "
        f"(1000 resamples) {t_boot * 1e3:.0f} ms more"
    )

    start = time.perf_counter()
    cascade_study(probs, labels, NESTING, settings=settings)
    top1 = predictions(probs)
    oracle_summary(top1, labels, NESTING)
    first_correct_shares(top1, labels, NESTING)
    total = time.perf_counter() - start
    print(f"full study from probabilities (cascade + oracle, reductions included): {total:.2f} s")
    columns = ["max_size", "accuracy_mean", "accuracy_ci_low", "accuracy_ci_high"]
    print(study.summary()[[*columns, "expected_size_mean"]])


if __name__ == "__main__":
    main()
