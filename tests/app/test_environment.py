"""The conda environment, the lock file and pyproject.toml describe one environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
#: Installed by the set-up itself (scripts/setup.sh; conda's pip), never frozen into a lock.
INSTALLERS = {"pip", "setuptools", "wheel"}


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


def test_environment_yml_is_the_full_lock():
    """Every pin of the lock, transitive ones too, and nothing else (generated, then checked)."""
    assert _conda_pip_pins() == _lock()
    check = [sys.executable, str(ROOT / "scripts" / "environment.py"), "--check"]
    done = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_lock_holds_every_dependency_of_what_it_pins():
    """The lock is closed: each installed locked package's requirements are locked too."""
    lock = set(_lock())
    missing = set()
    for name in lock:
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:  # another platform's package
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                if _norm(req.name) not in lock | INSTALLERS:
                    missing.add(f"{req.name} (needed by {name})")
    assert not missing, f"not in requirements.lock: {sorted(missing)}"


def _is_guarded(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    return any(isinstance(h.type, ast.Name) and h.type.id in names for h in node.handlers)


def _imports() -> dict[str, set[str]]:
    """Top-level module → files importing it. A package imported anywhere inside ``try: …
    except ImportError`` is optional (the code says what to install) and left out."""
    found: dict[str, set[str]] = {}
    optional: set[str] = set()
    for path in sorted((ROOT / "mrl_analysis").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.Try) and _is_guarded(node)
            for stmt in node.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if id(node) in guarded:
                    optional.add(top)
                elif top not in sys.stdlib_module_names and top not in {
                    "mrl_analysis",
                    "__future__",
                }:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return {module: files for module, files in found.items() if module not in optional}


def test_every_imported_package_is_declared():
    declared = {_norm(r.name) for r in _pyproject_requirements()}
    distributions = metadata.packages_distributions()
    undeclared = {}
    for module, files in _imports().items():
        names = {_norm(d) for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"


def test_torch_pins_are_the_working_pair():
    # torch 2.13.0+cpu breaks torchvision here; 2.14.1 + 0.29.1 is the pair that works.
    lock = _lock()
    assert (lock["torch"], lock["torchvision"]) == ("2.14.1", "0.29.1")
