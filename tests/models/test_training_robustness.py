"""Training refuses what it cannot do, at once and in one clear line (issue 13's probes):
concurrent runs into one file, bad config values, a device the machine lacks, a
.safetensors output, resuming a checkpoint that holds no training state, and tiny runs
whose one-cycle warm-up used to divide by zero."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from conftest import needs_fashion_mnist

from mrl_analysis.models.checkpoints import load_checkpoint, save_checkpoint
from mrl_analysis.models.network import build_model
from mrl_analysis.models.training import (
    OutputBusyError,
    TrainConfig,
    config_differences,
    one_cycle,
    output_lock,
    resolve_device,
    train,
)

#: Seconds-long real runs: 128 Fashion-MNIST images, the cheapest backbone.
SMALL = {
    "dataset": "fashion-mnist",
    "arch": "shufflenet_v2_x0_5",
    "kind": "mrl",
    "nesting": [1, 2, 1024],
    "epochs": 1,
    "batch_size": 32,
    "max_train_samples": 128,
    "max_eval_samples": 64,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", "abc"),
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", True),
        ("label_smoothing", 2),
        ("label_smoothing", 1.0),
        ("lr", -0.1),
        ("lr", float("nan")),
        ("momentum", 1.5),
        ("max_train_samples", 0),
        ("seed", "0"),
        ("kind", "matryoshka"),
        ("nesting", [8, 4]),
        ("nesting", "1,2,4"),
        ("stem", "tiny"),
        ("device", "gpu0"),
        ("decode", "yes"),
        ("relative_importance", [1.0, 1.0]),
    ],
)
def test_bad_values_are_one_clear_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field) as info:
        TrainConfig.from_dict({"nesting": [1, 2, 4], field: value})
    assert "\n" not in str(info.value)


def test_ff_dim_belongs_to_ff_models_only():
    with pytest.raises(ValueError, match="ff_dim"):
        TrainConfig(kind="mrl", ff_dim=8)
    assert TrainConfig(kind="ff", ff_dim=8).ff_dim == 8


def test_a_gpu_profile_parses_anywhere_but_trains_only_where_a_gpu_is(tmp_path):
    cfg = TrainConfig(**{**SMALL, "device": "cuda"})
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device(cfg.device)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train(cfg, tmp_path / "gpu.pt")
    assert not (tmp_path / "gpu.pt").exists()


def test_a_safetensors_output_is_refused_before_any_data_is_read(tmp_path):
    # A data root that does not exist: reading data would fail differently.
    cfg = {**SMALL, "data_root": str(tmp_path / "missing")}
    with pytest.raises(ValueError, match=r"\.safetensors cannot store"):
        train(cfg, tmp_path / "model.safetensors")


def test_resuming_a_checkpoint_without_training_state_is_a_clear_error(tmp_path):
    exported = tmp_path / "exported.pt"
    save_checkpoint(exported, build_model("shufflenet_v2_x0_5", 10, "mrl", [1, 2, 1024]))
    with pytest.raises(ValueError, match="not a training checkpoint"):
        train(SMALL, exported, resume=True)


def test_a_checkpoint_from_before_a_new_field_still_resumes():
    requested = TrainConfig(**SMALL).__dict__
    saved = {k: v for k, v in requested.items() if k not in ("decode", "compile")}
    assert config_differences(saved, requested) == {}
    assert config_differences({**saved, "compile": True}, requested) == {"compile": (True, False)}


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 8, 100])
def test_one_cycle_is_defined_for_any_number_of_steps(total):
    factor = one_cycle(total)
    values = [factor(t) for t in range(total)]
    assert all(math.isfinite(v) and 0 < v <= 1 for v in values)
    peak = values.index(max(values))
    assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :], strict=False))


@needs_fashion_mnist
def test_128_samples_in_batches_of_32_train(tmp_path):
    out = train(SMALL, tmp_path / "small.pt", progress=False)
    history = load_checkpoint(out)["meta"]["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


@needs_fashion_mnist
def test_a_second_run_into_the_same_file_is_refused(tmp_path):
    out = tmp_path / "same.pt"
    with output_lock(out, wait=False):  # another run holds it (a lock is per open file)
        with pytest.raises(OutputBusyError, match=r"being trained by pid \d+"):
            train(SMALL, out, progress=False)
    assert not out.exists()


@needs_fashion_mnist
def test_a_resumed_run_waits_for_the_running_one_then_continues_it(tmp_path):
    out = tmp_path / "same.pt"
    result: dict = {}
    with output_lock(out, wait=False):
        worker = threading.Thread(
            target=lambda: result.update(path=train(SMALL, out, resume=True, progress=False))
        )
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and not out.exists()  # waiting, not training
    worker.join(timeout=120)
    assert result["path"] == out and load_checkpoint(out)["train_state"]["epoch"] == 1
