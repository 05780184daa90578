"""Embedding under torchrun (2 CPU processes, gloo): the sharded cache is the single-process
one, the command line runs unchanged, and a killed rank's job resumes from its chunks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_fakes import SMALL, instrument, make_bundle, make_model, one_torch_thread
from PIL import Image

from mrl_analysis.app.cli import main as cli_main
from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.reader import open_cache
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import build_model

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent

# The build facts of a manifest (and what changes with every build), not its content.
_BUILD_FIELDS = {"build", "build_id", "created", "manifest_sha256"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port; gloo on CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def same_cache(a: Path, b: Path) -> None:
    """The caches at ``a`` and ``b`` hold identical arrays and manifests apart from the build."""
    first, second = open_cache(a), open_cache(b)
    first.verify()
    second.verify()
    np.testing.assert_array_equal(first.features(), second.features(), strict=True)
    np.testing.assert_array_equal(first.logits(), second.logits(), strict=True)
    np.testing.assert_array_equal(first.labels, second.labels, strict=True)
    assert first.sample_ids == second.sample_ids

    def content(manifest: dict) -> dict:
        return {k: v for k, v in manifest.items() if k not in _BUILD_FIELDS}

    assert content(first.manifest) == content(second.manifest)


def _folder_data(root: Path, per_class: int = 7) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee", "cat"):
        (root / "test" / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "test" / cls / f"{i}.png")
    return root


def test_torchrun_embed_command_equals_one_process(tmp_path):
    data = _folder_data(tmp_path / "data")
    torch.manual_seed(0)
    model = build_model("resnet18", 3, "mrl", [2, 8, 512], in_channels=3)
    meta = {"dataset": "folder", "classes": ["ant", "bee", "cat"]}
    ckpt = save_checkpoint(tmp_path / "m.pt", model, class_names=["ant", "bee", "cat"], meta=meta)
    common = ["embed", "-m", f"M={ckpt}", "--dataset", "folder", "--split", "test"]
    common += ["--data-root", str(data), "--batch-size", "4"]

    sharded = torchrun("-m", "mrl_analysis.cli", *common, "--cache-root", str(tmp_path / "two"))
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    assert cli_main([*common, "--cache-root", str(tmp_path / "one")]) == 0

    two, one = (tmp_path / r / "M" / "folder-test" for r in ("two", "one"))
    same_cache(two, one)
    assert open_cache(two).manifest["build"]["processes"] == 2
    assert open_cache(one).manifest["build"]["processes"] == 1
    assert open_cache(two).num_samples == 21
    assert not [p for p in (tmp_path / "two" / "M").iterdir() if ".partial-" in p.name]


WORKER = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import torch
from cache_fakes import instrument, make_bundle, make_model
from mrl_analysis.cache.build import embed_dataset

args = json.loads(sys.argv[2])
rank = int(os.environ["RANK"])
model, bundle = make_model(), make_bundle(args["n"])
seen = instrument(model)
if rank == args.get("die_rank"):
    embed = model.embed

    def dying(x):
        if len(seen) > args["die_after"]:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would
        return embed(x)

    model.embed = dying
cache = embed_dataset(model, bundle, args["dir"], batch_size=4, chunk_size=8, progress=False)
report = {"rank": rank, "seen": sum(seen), "build": cache.manifest["build"]}
# One file per rank: two ranks printing at once can interleave their lines on stdout.
with open(os.path.join(args["reports"], f"rank-{rank}.json"), "w") as out:
    json.dump(report, out)
"""


def _worker(tmp_path: Path, **args) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    reports = tmp_path / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir()
    return torchrun(str(script), str(HERE), json.dumps({**args, "reports": str(reports)}))


def _reports(tmp_path: Path) -> list[dict]:
    files = sorted((tmp_path / "reports").glob("rank-*.json"))
    return sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["rank"])


def test_a_killed_rank_resumes_without_redoing_finished_chunks(tmp_path):
    target = tmp_path / "c"
    # Rank 1 owns chunks 2 and 3 of 4; it dies in its third batch, after writing chunk 2.
    killed = _worker(tmp_path, n=32, dir=str(target), die_rank=1, die_after=2)
    assert killed.returncode != 0, "the job went on without its killed rank"
    done = sorted(p.name for p in tmp_path.glob(".c.partial-*/chunk-*.npz"))
    assert "chunk-000002.npz" in done and "chunk-000003.npz" not in done
    assert not (target / "manifest.json").exists()

    resumed = _worker(tmp_path, n=32, dir=str(target))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    reports = _reports(tmp_path)
    assert [r["rank"] for r in reports] == [0, 1]
    assert sum(r["seen"] for r in reports) == 32 - 8 * len(done), "finished chunks were redone"
    assert reports[0]["build"]["chunks_resumed"] == len(done)

    model = make_model()
    seen = instrument(model)
    reference = embed_dataset(model, make_bundle(32), tmp_path / "ref", **SMALL)
    assert sum(seen) == 32
    same_cache(target, reference.path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".c.")) == [".c.lock"]


def test_a_failure_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    """A bundle whose labels disagree with its data fails on rank 0's assembly; rank 1 is
    told, instead of waiting for a cache that never comes."""
    script = tmp_path / "bad.py"
    script.write_text(
        WORKER.replace(
            'make_bundle(args["n"])\n',
            'make_bundle(args["n"])\nbundle.targets = (bundle.targets + 1) % 10\n',
        )
    )
    args = {"n": 16, "dir": str(tmp_path / "c"), "reports": str(tmp_path)}
    proc = torchrun(str(script), str(HERE), json.dumps(args))
    assert proc.returncode != 0
    assert "bundle.targets disagree" in proc.stderr
    assert "rank 0 failed while assembling the caches" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_without_torchrun_nothing_is_distributed(tmp_path, monkeypatch):
    """A plain process (no torchrun variables) builds alone; distributed=True outside
    torchrun has no group to join and builds alone too."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    cache = embed_dataset(make_model(), make_bundle(8), tmp_path / "c", distributed=True, **SMALL)
    assert cache.manifest["build"]["processes"] == 1
    assert not torch.distributed.is_initialized()
