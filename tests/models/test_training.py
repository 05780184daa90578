"""Training: real Fashion-MNIST runs, checkpoints per epoch, kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_TRAIN, needs_fashion_mnist

from mrl_analysis.core import parallel
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_checkpoint, load_model
from mrl_analysis.models.training import TrainConfig, config_differences, train, train_many

pytestmark = [needs_fashion_mnist, pytest.mark.integration]


def test_short_run_beats_chance_at_every_size(tiny_fmnist_models):
    ckpt = load_checkpoint(tiny_fmnist_models["mrl"])
    history = ckpt["meta"]["history"]
    assert len(history) == 1
    accuracy = {int(m): a for m, a in history[0]["val_top1"].items()}
    assert sorted(accuracy) == [1, 2, 4, 8, 512]
    # 10 classes: chance is 10 %. Even the 1-dim head must be well above it (fractions).
    assert min(accuracy.values()) > 0.25, accuracy
    assert accuracy[512] > 0.70, accuracy
    assert ckpt["meta"]["metrics"] == history[0]["val_top1"]
    meta = ckpt["meta"]
    assert meta["dataset"] == "fashion-mnist" and meta["dataset_fingerprint"]
    assert meta["versions"]["torch"] == torch.__version__
    assert ckpt["class_names"][0].startswith("T-shirt")


def _first_m_1nn(model_path, m: int, n_db: int = 3000, n_q: int = 1000) -> float:
    model = load_model(model_path)
    train_b = get_dataset("fashion-mnist", "train")
    test_b = get_dataset("fashion-mnist", "test")
    with torch.inference_mode():
        db = model.embed(torch.stack([train_b.dataset[i][0] for i in range(n_db)]))[:, :m]
        q = model.embed(torch.stack([test_b.dataset[i][0] for i in range(n_q)]))[:, :m]
    db = torch.nn.functional.normalize(db, dim=1)
    q = torch.nn.functional.normalize(q, dim=1)
    nearest = torch.cdist(q, db).argmin(dim=1).numpy()
    return float(np.mean(train_b.targets[:n_db][nearest] == test_b.targets[:n_q]))


def test_mrl_small_sizes_beat_ff_first_m_features(tiny_fmnist_models):
    # The paper's "Rand. FS" baseline: the first m features of a fixed-feature model.
    # (m = 1 is skipped: L2-normalized 1-d features keep only their sign.)
    for m in (2, 4):
        mrl = _first_m_1nn(tiny_fmnist_models["mrl"], m)
        ff = _first_m_1nn(tiny_fmnist_models["ff-512"], m)
        assert mrl > ff + 0.05, (m, mrl, ff)


def test_existing_checkpoint_is_not_overwritten(tiny_fmnist_models):
    with pytest.raises(FileExistsError, match="resume"):
        train({**TINY_TRAIN, "kind": "mrl"}, tiny_fmnist_models["mrl"], progress=False)


def test_resume_with_other_config_is_refused(tiny_fmnist_models):
    with pytest.raises(ValueError, match="config differs"):
        train({**TINY_TRAIN, "kind": "mrl", "lr": 0.5}, tiny_fmnist_models["mrl"], resume=True)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="epochz"):
        TrainConfig.from_dict({"epochz": 3})


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    cfg = {
        **TINY_TRAIN,
        "kind": "mrl-e",
        "nesting": [1, 4, 512],
        "epochs": 3,
        "batch_size": 128,
        "lr": 0.1,
        "max_train_samples": 1024,
        "max_eval_samples": 256,
    }
    killed = tmp_path / "killed.pt"
    args = [
        sys.executable,
        "-m",
        "mrl_analysis.app.cli",
        "train",
        "-o",
        str(killed),
        "--quiet",
        "--dataset",
        "fashion-mnist",
        "--kind",
        "mrl-e",
        "--nesting",
        "1,4,512",
        "--epochs",
        "3",
        "--batch-size",
        "128",
        "--max-train-samples",
        "1024",
        "--set",
        "max_eval_samples=256",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 240
    while not killed.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed.exists(), "the run never wrote its first epoch checkpoint"
    done_epochs = load_checkpoint(killed)["train_state"]["epoch"]
    assert 1 <= done_epochs < 3, "kill came too late to test resuming"

    train(cfg, killed, resume=True, progress=False)
    straight = train(cfg, tmp_path / "straight.pt", progress=False)
    a, b = load_checkpoint(killed), load_checkpoint(straight)
    assert a["train_state"]["epoch"] == b["train_state"]["epoch"] == 3
    for key, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][key], tensor, msg=key)
    assert len(a["meta"]["history"]) == 3


def test_another_spelling_of_the_data_folder_is_the_same_config(tmp_path):
    data = tmp_path / "tin"
    data.mkdir()
    requested = {"data_root": str(data), "epochs": 1}
    # Same folder: the saved run resumes (or is skipped) under the new spelling.
    assert config_differences({"data_root": str(data / ".." / "tin"), "epochs": 1}, requested) == {}
    # Another folder, or another field: reported as (saved, requested).
    other = {"data_root": str(tmp_path / "elsewhere"), "epochs": 1}
    assert config_differences(other, requested) == {
        "data_root": (str(tmp_path / "elsewhere"), str(data))
    }
    longer = {"data_root": str(data), "epochs": 2}
    assert config_differences(longer, requested) == {"epochs": (2, 1)}
    assert config_differences({"data_root": None, "epochs": 1}, requested) == {
        "data_root": (None, str(data))
    }


def test_models_trained_side_by_side_match_those_trained_one_after_the_other(tmp_path, capsys):
    small = {
        **TINY_TRAIN,
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "max_train_samples": 1024,
        "max_eval_samples": 256,
    }
    configs = {"mrl": {**small, "kind": "mrl"}, "ff-8": {**small, "kind": "ff", "ff_dim": 8}}
    together = train_many(configs, tmp_path / "together", jobs=2)
    shown = capsys.readouterr()
    assert (shown.out + shown.err).count(": trained in") == 2  # a line per model
    # With the threads each worker had: other thread counts sum in other orders, and after
    # a few steps the weights differ visibly.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, parallel.cores() // 2))
    try:
        alone = train_many(configs, tmp_path / "alone", jobs=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in configs:
        a, b = load_checkpoint(together[name]), load_checkpoint(alone[name])
        assert a["meta"]["train_config"] == b["meta"]["train_config"]
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), key
    # Finished models are skipped in this process, without starting workers.
    start = time.perf_counter()
    assert train_many(configs, tmp_path / "together", jobs=2) == together
    assert time.perf_counter() - start < 5
