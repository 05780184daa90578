"""Benchmark: adaptive retrieval at the frontier: MRL pipelines (exact, AdANNS-IVF, int8 and
binary shortlists) against exact single-shot search and against faiss's own pipelines.

Two databases:

* synthetic: N = 1,000,000 nested-like vectors of size 512 in 1000 classes
  (``mrl_analysis.retrieval.synthetic.synthetic_nested``: class centroid + noise (``--noise``),
  scaled by ``(1 + j)^-1/2`` per dimension ``j`` so the first dimensions carry most of the
  L2 geometry), rows L2-normalized at full size; ``--queries`` queries from the same
  distribution;
* the real cache of ``make demo`` (train split as database, test split as queries), when
  it exists: ``data/cache/<model>/<dataset>-{train,test}``.

On each, one run of :func:`mrl_analysis.retrieval.tables.frontier_table`, everything timed
side by side on the same machine and threads (the best of ``--repeats`` runs, index
building excluded and printed):

* ``exact``: exact single-shot search at full size (the reference and the truth of NN
  recall@10, the share of the exact top 10 found);
* MRL pipelines (shortlist of K = 200 at Ds, exact float32 rerank at Dr = full unless
  named): exact shortlists at Ds = 16, 32, 64; AdANNS-IVF (centroids on the first Dc dims,
  lists scanned at Ds; nlist ~ 4·sqrt(N)) at (Dc, Ds) = (16, 32), (32, 64), (64, 64),
  (32, 128), (64, 128) over nprobe 8 … 64, with K = 50, 100 and 400 too, and with int8
  lists; int8 and binary flat shortlists; an IVF reranked at Dr = 128 (fewer bytes);
* faiss-native peers over the full embedding: HNSW32 at full size (efSearch ladder) and
  IndexRefineFlat over IVF-PQ (nprobe × k_factor ladder), so one of their settings matches
  any recall. Each peer's index is dropped after its ladder: the run holds one full-size
  copy of the database at a time (the database array itself is the rerank store).

Targets (ratios, measured in one run): the best adaptive pipeline (fastest within 0.5
point of exact top-1 and 1 point of its mAP@10) >= 30x faster than exact, and faster than
the fastest faiss peer at its recall@10. The run prints the table of configurations
(ms/query, bytes/vector, recall@10, top-1, mAP@10), where the time goes (exact: scan vs
top-k selection; best adaptive: coarse quantizer, list scan and selection, rerank), the
peak RSS after each stage, saves the frontier figures (``--figures-dir``) and ends with

    frontier: best adaptive X× vs exact (top-1 Δ Y pt), Z× vs best faiss peer at recall@10 R

for the synthetic database (the cache's line is printed before it).

Run (about 15 minutes and 7 GB at 1M on 2 cores; the machine rules say inside the lock):
``flock /tmp/mrl-heavy.lock .venv/bin/python benchmarks/bench_retrieval.py [--n 1000000]
[--queries 1000] [--threads 2] [--skip-synthetic] [--cache-root data/cache --model MRL
--dataset fashion-mnist]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from mrl_analysis.cache.reader import open_cache
from mrl_analysis.cache.store import cache_path
from mrl_analysis.figures.save import save_figure
from mrl_analysis.retrieval import plots
from mrl_analysis.retrieval.index import Retriever
from mrl_analysis.retrieval.plan import IndexSpec, PeerSpec, Pipeline, nearest_size
from mrl_analysis.retrieval.summary import frontier_line, frontier_points, frontier_summary
from mrl_analysis.retrieval.synthetic import synthetic_nested
from mrl_analysis.retrieval.tables import frontier_table

SHORTLIST = 200
KS = (10,)
TOP1_TOLERANCE, MAP_TOLERANCE, TARGET = 0.005, 0.01, 30.0


def peak_rss(stage: str) -> None:
    """Print the process's peak resident memory so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"[memory] peak RSS after {stage}: {peak:.2f} GiB", flush=True)


def machine() -> None:
    """Print the CPU, its SIMD level, the faiss build and level in use, and what else runs."""
    model, flags = platform.processor() or "?", []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), model)
        flags = next((ln.split() for ln in lines if ln.startswith("flags")), [])
    print(f"CPU: {model}, {os.cpu_count()} cores, AVX-512: {'yes' if 'avx512f' in flags else 'no'}")
    print(
        f"faiss {faiss.__version__}, compile options: {faiss.get_compile_options().strip()}; "
        f"SIMD level in use: {faiss.SIMDConfig.get_level_name()}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(auto)')}"
    )
    busy = subprocess.run(
        ["ps", "-eo", "pcpu=,pid=,comm="], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    others = [
        " ".join(row.split())
        for row in busy
        if len(row.split()) >= 3
        and float(row.split()[0]) >= 20
        and row.split()[1] != str(os.getpid())
    ]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average {load}; other processes >= 20% CPU: {others or 'none'}")


def pipelines(sizes: list[int]) -> list[Pipeline]:
    """The MRL configurations timed (see module docstring), at the nesting sizes nearest."""
    full, smaller = sizes[-1], sizes[:-1]

    def near(target: int) -> int:
        return nearest_size(smaller, target)

    def ivf(dc: int, ds: int, nprobe: int, codec: str = "float32") -> IndexSpec:
        return IndexSpec("ivf", codec, nprobe=nprobe, coarse_dim=min(near(dc), near(ds)))

    runs = [Pipeline(near(ds), None, SHORTLIST) for ds in (16, 32, 64)]
    for dc, ds in ((16, 32), (32, 64), (64, 64), (32, 128), (64, 128)):
        runs += [Pipeline(near(ds), None, SHORTLIST, ivf(dc, ds, p)) for p in (8, 16, 32, 64)]
    # Shortlist length: the rerank of K vectors at full size is a fixed cost per query.
    runs.append(Pipeline(near(64), None, 2 * SHORTLIST, ivf(64, 64, 32)))
    runs += [Pipeline(near(64), None, k, ivf(64, 64, p)) for k in (50, 100) for p in (8, 16)]
    runs += [Pipeline(near(64), None, SHORTLIST, ivf(32, 64, p, "int8")) for p in (16, 32)]
    runs.append(Pipeline(near(64), None, SHORTLIST, IndexSpec(codec="int8")))
    runs += [
        Pipeline(d, None, SHORTLIST, IndexSpec(codec="binary")) for d in (near(256),) if d % 8 == 0
    ]
    runs.append(Pipeline(near(64), near(128), SHORTLIST, ivf(32, 64, 32)))
    return list(dict.fromkeys(r for r in runs if r.shortlist_dim < full))


def peers(dim: int, n: int) -> list[PeerSpec]:
    """faiss-native ladders over the full embedding (see module docstring)."""
    nlist = IndexSpec("ivf").list_count(n)
    pq = max(q for q in range(1, max(1, dim // 8) + 1) if dim % q == 0)
    bits = "" if n >= 10_000 else "x4"
    ladder = [PeerSpec("HNSW32,Flat", f"efSearch={ef}") for ef in (16, 32, 64, 128, 256)]
    ladder += [
        PeerSpec(f"IVF{nlist},PQ{pq}{bits}np,RFlat", f"nprobe={p},k_factor_rf={kf}")
        for p, kf in ((8, 4), (16, 4), (16, 8), (32, 8), (64, 16), (16, 32))
    ]
    return ladder


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def breakdown(retriever: Retriever, queries: np.ndarray, best: Pipeline, repeats: int) -> None:
    """Where the time goes: exact search (distance scan = a GEMM of the same size,
    selection = the rest) and the best adaptive pipeline (coarse quantizer, list scan and
    top-K selection, rerank)."""
    nq, spec = len(queries), best.index
    store = retriever.vectors(None)
    q = np.array(queries, dtype=np.float32)
    faiss.normalize_L2(q)
    t_knn = timed(lambda: faiss.knn(q, store, KS[-1]), repeats)
    block = max(1, (1 << 26) // max(len(q), 1))  # 256 MB of distances at a time

    def gemm() -> None:
        for a in range(0, store.shape[0], block):
            q @ store[a : a + block].T

    t_gemm = timed(gemm, repeats)
    per = 1e3 / nq
    print(
        f"[time] exact single-shot: {per * t_knn:.3f} ms/query = distance scan (GEMM) "
        f"{per * t_gemm:.3f} + top-k selection and the rest {per * max(t_knn - t_gemm, 0):.3f}"
    )
    ds, k = best.shortlist_dim, best.shortlist_size
    dr = retriever.check_dim(best.rerank_dim)
    retriever.prepare_pipeline(best)  # the peers' runs released it: rebuild before timing
    t_short = timed(lambda: retriever.search(queries, ds, k, spec), repeats)
    shortlist = retriever.search(queries, ds, k, spec)
    t_rerank = timed(lambda: retriever.rerank(queries, shortlist, dr, spec), repeats)
    parts = f"shortlist {1e3 * t_short / nq:.4f} ms/query"
    if spec.kind == "ivf":
        ivf = retriever.shortlist_index(ds, spec).index
        qd = np.array(queries[:, :ds], dtype=np.float32)
        faiss.normalize_L2(qd)
        nprobe = min(spec.nprobe, ivf.nlist)
        t_coarse = timed(lambda: ivf.quantizer.search(qd, nprobe), repeats)
        parts = (
            f"coarse quantizer {1e3 * t_coarse / nq:.4f} + list scan and top-K selection "
            f"{1e3 * max(t_short - t_coarse, 0) / nq:.4f} ms/query"
        )
    print(f"[time] best adaptive: {parts}; rerank at Dr={dr} {1e3 * t_rerank / nq:.4f} ms/query")


def bench(
    name: str,
    database: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    sizes: list[int],
    args: argparse.Namespace,
) -> pd.Series:
    """Time every configuration on one database; print and save the frontier."""
    n, full = database.shape
    print(
        f"\n=== {name}: database {n:,} x {full}, {len(queries):,} queries, K={SHORTLIST}, "
        f"{args.threads} threads",
        flush=True,
    )
    retriever = Retriever(database, labels, IndexSpec(threads=args.threads))
    shares = np.shares_memory(retriever.vectors(None), database)
    print(f"full-size rerank store is the database itself (no copy): {shares}")
    runs = pipelines(sizes)
    common = {"ks": KS, "model": name, "repeats": args.repeats, "n_boot": None, "progress": False}
    start = time.perf_counter()
    frames = [frontier_table(retriever, queries, query_labels, runs, **common)]
    print(f"MRL pipelines: {len(runs)} configurations in {time.perf_counter() - start:.0f}s")
    peak_rss("the MRL pipelines")
    ladders = peers(full, n)
    for factory in dict.fromkeys(p.factory for p in ladders):
        ladder = [p for p in ladders if p.factory == factory]
        start = time.perf_counter()
        part = frontier_table(retriever, queries, query_labels, peers=ladder, **common)
        frames.append(part[part["method"] == "peer"])
        print(f"peer {factory}: {len(ladder)} settings in {time.perf_counter() - start:.0f}s")
        peak_rss(f"peer {factory}")
        # One full-size copy at a time: drop this peer (and the MRL indexes) before the next.
        retriever.release(keep_vectors=True)
    table = pd.concat(frames, ignore_index=True)
    print("\nbuilt structures (build time, resident memory, bytes per vector):")
    print(retriever.index_table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    points = frontier_points(table, name)
    columns = {
        "label": "configuration",
        "ms_per_query": "ms/query",
        "bytes_per_vector": "bytes/vector",
        "nn_recall": "recall@10",
        "top1": "top-1",
        "map": "mAP@10",
        "pareto_ms": "Pareto(ms)",
        "pareto_bytes": "Pareto(bytes)",
    }
    print("\nconfigurations (recall@10: share of the exact full-size top 10 found):")
    with pd.option_context("display.max_colwidth", 72, "display.width", 220):
        shown = points[list(columns)].rename(columns=columns)
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    summary = frontier_summary(
        table, top1_tolerance=TOP1_TOLERANCE, map_tolerance=MAP_TOLERANCE
    ).iloc[0]
    if summary["best"]:
        best = points[points["label"] == summary["best"]].iloc[0]
        by_key = {
            (
                r.shortlist_dim,
                retriever.check_dim(r.rerank_dim),
                r.index.describe(r.shortlist_dim, n),
            ): r
            for r in runs
        }
        breakdown(
            retriever, queries, by_key[(best["Ds"], best["Dr"], best["config"])], args.repeats
        )
        verdict = "MET" if summary["speedup_vs_exact"] >= TARGET else "MISSED"
        print(
            f"[target] best adaptive {summary['speedup_vs_exact']:.1f}x vs exact (target >= "
            f"{TARGET:.0f}x: {verdict}); top-1 {100 * summary['top1_delta']:+.2f} pt, "
            f"mAP@10 {100 * summary['map_delta']:+.2f} pt"
        )
        if summary["peer"]:
            verdict = "MET" if summary["speedup_vs_peer"] > 1 else "MISSED"
            print(
                f"[target] vs the fastest faiss peer at recall@10 >= {summary['recall']:.3f} "
                f"({summary['peer']}): {summary['speedup_vs_peer']:.2f}x (target > 1: {verdict})"
            )
    out = Path(args.figures_dir)
    slug = name.split()[0]
    for quality in ("nn_recall", "top1"):
        fig = plots.frontier_figure(table, name, quality=quality, dataset=None)
        save_figure(fig, points, f"frontier_{slug}_{quality}", out_dir=out)
    retriever.release()
    return summary


def real_cache(args: argparse.Namespace) -> tuple | None:
    """The demo cache's train (database) and test (queries) splits, or None with the reason."""
    paths = [cache_path(args.cache_root, args.model, args.dataset, s) for s in ("train", "test")]
    try:
        train, test = (open_cache(p) for p in paths)
    except (FileNotFoundError, ValueError) as exc:  # absent, or stale / corrupted
        print(f"\n(real cache skipped: {exc}; `make demo` (re)builds it)")
        return None
    if train.nesting != test.nesting:
        raise SystemExit(f"{paths[0]} and {paths[1]} come from different models (nesting differs)")
    return (
        train.features(normalize=True),
        np.asarray(train.labels),
        test.features(),
        np.asarray(test.labels),
        [int(m) for m in train.nesting],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic database size")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.8, help="synthetic noise level")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--cache-root", default="data/cache")
    parser.add_argument("--model", default="MRL")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--figures-dir", default="figures/bench_retrieval")
    parser.add_argument(
        "--simd",
        choices=["native", "avx2"],
        default="native",
        help="avx2: run faiss's kernels and its OpenBLAS at AVX2, the target machine's level",
    )
    args = parser.parse_args()
    if args.simd == "avx2":
        if os.environ.get("OPENBLAS_CORETYPE") != "Haswell":
            # OpenBLAS picks its kernels when it loads: restart with the core type set.
            env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
        faiss.SIMDConfig.set_level(faiss.SIMDLevel_AVX2)
    machine()
    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()

    results = {}
    cache = None if args.skip_cache else real_cache(args)
    if cache is not None:
        db, labels, queries, query_labels, nesting = cache
        name = f"cache ({args.model}, {args.dataset})"
        results["cache"] = bench(name, db, labels, queries, query_labels, nesting, args)
        del db, labels, queries, query_labels
    if not args.skip_synthetic:
        start = time.perf_counter()
        db, labels, queries, query_labels = synthetic_nested(
            args.n, args.queries, args.dim, args.classes, noise=args.noise, normalize=True
        )
        print(f"\nsynthetic data generated in {time.perf_counter() - start:.1f}s")
        sizes = [m for m in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if m < args.dim]
        results["synthetic"] = bench(
            "synthetic", db, labels, queries, query_labels, [*sizes, args.dim], args
        )
    peak_rss("the whole run")
    print(f"bench time {time.perf_counter() - started:.0f}s")
    print()
    for name, summary in results.items():
        print(f"[{name}] {frontier_line(summary)}")
    if results:
        print(frontier_line(results.get("synthetic", results.get("cache"))))


if __name__ == "__main__":
    main()
