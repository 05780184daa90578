"""Side-by-side workers: how many, their threads, and that they die with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mrl_analysis.core import parallel


def test_jobs_default_to_one_per_core_and_never_exceed_the_tasks() -> None:
    assert parallel.n_jobs(None, 100) == min(parallel.MAX_JOBS, parallel.cores())
    assert parallel.n_jobs(3, 2) == 2
    assert parallel.n_jobs(None, 0) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_jobs_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        parallel.n_jobs(bad, 3)


def _environment(_: int) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in parallel.THREAD_ENV}


def test_workers_share_the_cores_unless_the_caller_set_threads(monkeypatch) -> None:
    for name in parallel.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")  # the caller's choice wins
    with parallel.worker_pool(2) as pool:
        seen = pool.submit(_environment, 0).result()
    shared = str(max(1, parallel.cores() // 2))
    assert seen == {
        "OMP_NUM_THREADS": shared,
        "MKL_NUM_THREADS": "7",
        "OPENBLAS_NUM_THREADS": shared,
    }


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path) -> None:
    pid_file = tmp_path / "worker.pid"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from mrl_analysis.core import parallel\n"
        "def job(path):\n"
        "    Path(path).write_text(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    with parallel.worker_pool(1) as pool:\n"
        "        pool.submit(job, sys.argv[1]).result()\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        # a killed worker stays a zombie until init reaps it: that counts as gone
        stat = f"/proc/{worker}/stat"
        if os.path.exists(stat) and open(stat).read().split(") ")[-1].startswith("Z"):
            return
        time.sleep(0.1)
    os.kill(worker, 9)
    pytest.fail("the worker outlived its killed parent")
