"""The conda environment, the lock file and pyproject.toml describe one environment."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return [Requirement(r) for r in reqs]


def _conda_pip_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for item in pip_section:
        if "==" in item:
            name, version = item.split("==")
            pins[_norm(name)] = version
    return pins


def test_lock_satisfies_pyproject():
    lock = _lock()
    for req in _pyproject_requirements():
        assert _norm(req.name) in lock, f"{req.name} is in pyproject.toml but not in the lock"
        assert req.specifier.contains(lock[_norm(req.name)], prereleases=True), (
            f"lock pins {req.name}=={lock[_norm(req.name)]}, outside pyproject's {req.specifier}"
        )


def test_environment_yml_matches_pyproject_and_lock():
    conda = _conda_pip_pins()
    lock = _lock()
    wanted = {_norm(r.name) for r in _pyproject_requirements()}
    assert wanted == set(conda), (
        f"environment.yml and pyproject.toml differ: only in pyproject {wanted - set(conda)}, "
        f"only in environment.yml {set(conda) - wanted}"
    )
    for name, version in conda.items():
        assert lock[name] == version, f"{name}: environment.yml {version} != lock {lock[name]}"


def test_torch_pins_are_the_working_pair():
    # torch 2.13.0+cpu breaks torchvision here; 2.14.1 + 0.29.1 is the pair that works.
    lock = _lock()
    assert (lock["torch"], lock["torchvision"]) == ("2.14.1", "0.29.1")
