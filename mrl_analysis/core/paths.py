"""Where the project is, wherever a process or notebook kernel starts.

A notebook's kernel starts in ``notebooks/`` under JupyterLab, in the batch root under the
runner, and anywhere under plain ``papermill``; relative paths (``data/checkpoints/…``,
``figures/``) must mean the same folder in all three. The project root is the first of:

1. the project holding ``start`` (default: this package, i.e. a source checkout or an
   editable install): the nearest folder at or above it with a ``pyproject.toml``;
2. ``$MRL_PROJECT_ROOT`` (:data:`PROJECT_ROOT_ENV`; a package installed into site-packages
   has no project of its own; ``make lab`` and the runner set it);
3. the project at or above the current directory;
4. the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Names the project folder where it cannot be found from the package or a spec file.
PROJECT_ROOT_ENV = "MRL_PROJECT_ROOT"
_PACKAGE = Path(__file__).resolve().parents[1]


def project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding a ``pyproject.toml``."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def env_project_root() -> Path | None:
    """``$MRL_PROJECT_ROOT`` as an absolute folder (None when unset); a ``FileNotFoundError``
    naming it when it is set to something that is not a folder."""
    value = os.environ.get(PROJECT_ROOT_ENV)
    if not value:
        return None
    root = Path(value).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(
            f"${PROJECT_ROOT_ENV}={value!r} is not a folder (working directory {Path.cwd()}); "
            "point it at the project holding data/ and notebooks/, or unset it"
        )
    return root


def find_project_root(start: Path | None = None) -> Path:
    """The project root (module docstring), searched from ``start`` (default: this package)."""
    return (
        project_root(_PACKAGE if start is None else start)
        or env_project_root()
        or project_root(Path.cwd())
        or Path.cwd().absolute()
    )
