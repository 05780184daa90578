"""Training profiles: the packaged GPU profile parses on any machine and moves the study's
models, caches and notebook parameters out of the CPU study's way."""

from __future__ import annotations

import pytest
import torch

from mrl_analysis.app.studies import load_study
from mrl_analysis.app.studies.profiles import apply_profile, list_profiles, load_profile


def test_the_gpu_profile_parses_and_every_model_config_is_valid():
    assert "tiny-imagenet-cuda" in list_profiles()
    cpu = load_study("tiny-imagenet")
    gpu = apply_profile("tiny-imagenet", "tiny-imagenet-cuda")
    assert gpu.name == "tiny-imagenet-cuda"
    # No class subset is drawn from data here: only the configs of the all-class models.
    configs = gpu.train_configs()
    assert set(configs) == set(cpu.train_configs())
    for cfg in configs.values():
        assert cfg.device == "cuda" and cfg.epochs > cpu.training.get("epochs", 1)
    assert gpu.models.checkpoints.name == "tiny-imagenet-cuda"
    assert gpu.novel_models.checkpoints.name == "tiny-imagenet-100-cuda"
    assert gpu.cache_root != cpu.cache_root


def test_the_notebooks_of_a_profiled_study_get_its_own_models():
    gpu = apply_profile("tiny-imagenet", "tiny-imagenet-cuda")
    defaults = gpu.batch_spec()["defaults"]
    assert defaults["models"]["MRL"].startswith("data/checkpoints/tiny-imagenet-cuda/")
    assert defaults["cache_root"].endswith("cache-cuda")


def test_a_profile_for_another_study_or_with_bad_values_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is for study 'tiny-imagenet'"):
        apply_profile("demo", "tiny-imagenet-cuda")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: demo\nname: demo-x\ntraining: {epochs: many}\n")
    with pytest.raises(ValueError, match="epochs"):
        apply_profile("demo", bad)
    with pytest.raises(ValueError, match="no profile named"):
        load_profile("nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_profile_trains_only_where_a_gpu_is(tmp_path):
    from mrl_analysis.models.training import train

    cfg = apply_profile("tiny-imagenet", "tiny-imagenet-cuda").train_configs()["mrl"]
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train(cfg, tmp_path / "mrl.pt")
