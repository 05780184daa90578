"""`mrl-analysis train` under torchrun (2 CPU processes, gloo): DistributedDataParallel,
validation gathered across ranks, rank 0's checkpoint, and resuming after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, needs_fashion_mnist

from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_checkpoint, load_model
from mrl_analysis.models.training import _Batches, _count_correct, _limit

pytestmark = [needs_fashion_mnist, pytest.mark.integration]

CPU = torch.device("cpu")

ARGS = [
    "--dataset",
    "fashion-mnist",
    "--arch",
    "shufflenet_v2_x0_5",
    "--kind",
    "mrl",
    "--nesting",
    "1,2,8,1024",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--max-train-samples",
    "1536",
    "--set",
    "max_eval_samples=300",
    "--set",
    "channels_last=true",
    "--quiet",
]


def _torchrun(output, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "mrl_analysis.cli",
        "train",
        "-o",
        str(output),
        *ARGS,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # A session of its own: the kill below takes torchrun and both workers at once.
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_two_process_training_resumes_after_a_kill_to_the_uninterrupted_result(tmp_path):
    killed = tmp_path / "killed.pt"
    proc = _torchrun(killed)
    deadline = time.time() + 240
    while not killed.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed.exists(), "the run never wrote its first epoch checkpoint"
    assert 1 <= load_checkpoint(killed)["train_state"]["epoch"] < 3, "killed too late"

    _finish(_torchrun(killed, "--resume"))
    straight = tmp_path / "straight.pt"
    _finish(_torchrun(straight))

    a, b = load_checkpoint(killed), load_checkpoint(straight)
    assert a["train_state"]["epoch"] == b["train_state"]["epoch"] == 3
    assert a["meta"]["world_size"] == 2 and len(a["meta"]["history"]) == 3
    for key, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][key], tensor, msg=key)

    # Validation split over two ranks and gathered = the sum of what each rank counts. Each
    # rank counted every 2nd sample in batches of 2 x its 32 training images, channels_last,
    # on one thread: the same batches here give the same logits (other batch shapes or thread
    # counts pick other kernels, whose rounding flips a near-tie now and then).
    model = load_model(straight).to(memory_format=torch.channels_last)
    cfg = b["meta"]["train_config"]
    bundle = get_dataset("fashion-mnist", "test")
    data = _Batches.of(_limit(bundle, cfg["max_eval_samples"], cfg["seed"]), bundle.transform, True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counts = [
            _count_correct(
                model, data.iterate(range(r, len(data), 2), 64, None), CPU, False, "", True
            )
            for r in range(2)
        ]
    finally:
        torch.set_num_threads(threads)
    total = sum(t for _, t in counts)
    assert total == cfg["max_eval_samples"]
    expected = {
        str(m): (counts[0][0][i] + counts[1][0][i]) / total for i, m in enumerate(model.nesting)
    }
    assert b["meta"]["history"][-1]["val_top1"] == pytest.approx(expected, abs=1e-12)
