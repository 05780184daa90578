"""Training profiles: another set of training values for a packaged study.

A profile (``profiles/<name>.yaml``) names the study it changes, the name the changed study
runs under, and the :class:`~mrl_analysis.models.training.TrainConfig` fields it replaces in
the study's ``training`` block::

    study: tiny-imagenet
    name: tiny-imagenet-cuda
    training: {device: cuda, epochs: 40, stem: small}

:func:`apply_profile` returns the study with those values, under the profile's name, with its
checkpoints in ``<folder>-<suffix>`` next to the study's own and its caches in
``<cache_root>-<suffix>`` (the suffix: the profile name without the study name, e.g.
``cuda``), so a profile's models never collide with (or resume) the study's. Every model's
config is checked when the profile is applied; whether the machine has the device is checked
only when training starts, so a GPU profile can be checked on any machine.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

from mrl_analysis.app.studies import ModelSet, Study, load_study
from mrl_analysis.models.training import TrainConfig

PROFILES_DIR = Path(__file__).parent


def list_profiles() -> list[str]:
    """The names of the packaged profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(profile: str | os.PathLike) -> dict:
    """A profile's contents (a packaged name or a YAML path), its keys checked."""
    path = Path(profile)
    if not path.suffix:
        path = PROFILES_DIR / f"{profile}.yaml"
        if not path.is_file():
            raise ValueError(f"no profile named {profile!r}; packaged profiles: {list_profiles()}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not {"study", "name", "training"} <= set(raw):
        raise ValueError(f"{path}: a profile needs the keys study, name and training")
    unknown = sorted(set(raw) - {"study", "name", "training"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: study, name, training")
    if not isinstance(raw["training"], dict):
        raise ValueError(f"{path}: training must be a mapping of TrainConfig fields")
    return raw


def apply_profile(study: Study | str, profile: str | os.PathLike) -> Study:
    """``study`` with ``profile``'s training values, name, checkpoint folders and cache root."""
    spec = load_study(study) if isinstance(study, str) else study
    raw = load_profile(profile)
    if raw["study"] != spec.name:
        raise ValueError(
            f"profile {raw['name']!r} is for study {raw['study']!r}, not {spec.name!r}"
        )
    name = str(raw["name"])
    suffix = name.removeprefix(spec.name).lstrip("-_") or name
    training = {**spec.training, **raw["training"]}

    def moved(models: ModelSet) -> ModelSet:
        folder = models.checkpoints.with_name(f"{models.checkpoints.name}-{suffix}")
        for model, fields in models.configs.items():
            try:
                TrainConfig.from_dict({"dataset": spec.dataset, **training, **fields})
            except (TypeError, ValueError) as err:
                raise ValueError(f"profile {name!r}, model {model}: {err}") from None
        return dataclasses.replace(models, checkpoints=folder)

    profiled = dataclasses.replace(
        spec,
        name=name,
        training=training,
        models=moved(spec.models),
        novel_models=None if spec.novel_models is None else moved(spec.novel_models),
        cache_root=spec.cache_root.with_name(f"{spec.cache_root.name}-{suffix}"),
    )
    return with_own_parameters(profiled)


def with_own_parameters(study: Study) -> Study:
    """``study`` whose batch passes the notebooks *its* models, caches and data.

    A batch names its study by reference (:attr:`Study.ref`) and the runner reloads that
    spec; a study changed in code (a profile, a benchmark's copy in other folders) would
    hand the notebooks the packaged spec's checkpoints. Its own parameters, as batch
    defaults, take precedence.
    """
    batch = dict(study.batch)
    batch["defaults"] = {**(batch.get("defaults") or {}), **study.parameters()}
    return dataclasses.replace(study, batch=batch)
