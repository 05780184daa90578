"""Running independent jobs (notebooks, model trainings) side by side on one machine's cores.

On a 2-core CPU most of a notebook is one thread of Python, and a small network's training
step does not keep two threads busy, so two 1-thread jobs at once finish sooner than one
2-thread job after the other (benchmarks/bench_demo.py --only parallel: the demo's models
1.6x, its notebooks 1.2-1.4x). Two jobs of 2 threads each on 2
cores would slow each other down many times over (OpenMP threads spin while they wait), so
every worker gets ``cores // jobs`` threads. Workers are spawned processes (a fresh
interpreter: no inherited locks or threads) that die with the process that started them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

#: Jobs run at once by default, at most (one per core below that).
MAX_JOBS = 4
#: The thread pools that size themselves from the environment (OpenMP: torch, faiss; MKL;
#: OpenBLAS: numpy), set in every worker (and inherited by what it starts, e.g. a kernel).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def n_jobs(jobs: int | None, n_tasks: int) -> int:
    """How many jobs run at once: ``jobs``, or one per core (at most :data:`MAX_JOBS`), never
    more than there are tasks, and at least one."""
    if jobs is None:
        jobs = min(MAX_JOBS, cores())
    elif isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    return max(1, min(jobs, n_tasks))


def _start_worker(threads: int, then: Callable[[int], Any] | None) -> None:
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))  # the caller's own setting wins
    if sys.platform == "linux":
        # A worker outliving a killed parent would go on writing the outputs that the next
        # run writes too: it gets SIGKILL when its parent dies.
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if then is not None:
        then(threads)


def worker_pool(jobs: int, then: Callable[[int], Any] | None = None) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes sharing the cores: each gets ``cores() // jobs``
    threads in :data:`THREAD_ENV` (unless already set) and then runs ``then(threads)``, a
    module-level function (e.g. one calling ``torch.set_num_threads``)."""
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(max(1, cores() // jobs), then),
    )
