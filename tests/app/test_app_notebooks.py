"""Notebooks run as a user opens them: plain papermill from the notebooks folder or any other
folder gets the same study paths as the runner, and saves no progress bars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAPERMILL = [sys.executable, "-m", "papermill", "--log-level", "ERROR"]

PARAMS = 'study = "demo"\nmodels = None\ncache_root = None\nsplit = None\ncheck = False\n'
BODY = """\
import json
from mrl_analysis.app.studies import use_study
from mrl_analysis.core.progress import progress

use_study(globals(), check=check)
for _ in progress(range(3), desc="load · MRL", leave=True):
    pass
print(json.dumps({"models": models, "cache_root": cache_root, "split": split}))
"""


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python", "language": "python"}
    cell = nbformat.v4.new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(BODY)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def _papermill(notebook: Path, out: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRL_")}
    return subprocess.run(
        [*PAPERMILL, str(notebook), str(out), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _printed(out: Path) -> tuple[dict, list]:
    nb = nbformat.read(str(out), as_version=4)
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1]), outputs


def test_plain_papermill_resolves_the_study_from_any_folder(tmp_path: Path) -> None:
    notebook = _notebook(tmp_path / "project-notebooks" / "nb.ipynb")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    results = []
    for cwd, args in ((elsewhere, ()), (elsewhere, ("--cwd", str(notebook.parent)))):
        out = tmp_path / f"out{len(results)}.ipynb"
        done = _papermill(notebook, out, cwd, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        printed, outputs = _printed(out)
        results.append(printed)
        # plain papermill, no runner: the bar's saved output is its finished line
        kinds = {kind for o in outputs for kind in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" not in kinds
        lines = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})]
        assert any(line.startswith("load · MRL: 3/3 it in") for line in lines), outputs
    assert results[0] == results[1]
    assert results[0]["models"]["MRL"] == str(ROOT / "data/checkpoints/fashion-mnist/mrl.pt")
    assert results[0]["cache_root"] == str(ROOT / "data" / "cache")
    assert results[0]["split"] == "test"


def test_a_missing_checkpoint_names_the_working_directory(tmp_path: Path) -> None:
    notebook = _notebook(tmp_path / "nb.ipynb")
    out = tmp_path / "out.ipynb"
    done = _papermill(
        notebook, out, tmp_path, "-p", "check", "True", "-y", "models: {X: nowhere/x.pt}"
    )
    assert done.returncode != 0
    errors = [
        o for c in nbformat.read(str(out), as_version=4).cells for o in c.get("outputs", [])
        if o.output_type == "error"
    ]  # fmt: skip
    message = errors[0]["evalue"]
    assert f"X: {ROOT / 'nowhere' / 'x.pt'}" in message
    assert f"working directory {tmp_path}" in message


@pytest.mark.integration
@pytest.mark.skipif(
    not (ROOT / "data" / "checkpoints" / "fashion-mnist" / "mrl.pt").is_file(),
    reason="needs the demo's models (make demo)",
)
@pytest.mark.parametrize("where", ["notebooks", "elsewhere"])
def test_notebook_01_runs_with_plain_papermill(tmp_path: Path, where: str) -> None:
    """The README's command, after `make demo`: from the notebooks folder (as JupyterLab
    starts kernels) and from an unrelated folder, with the notebook's own defaults."""
    out = tmp_path / "out.ipynb"
    notebook = ROOT / "notebooks" / "01_per_dimension_accuracy.ipynb"
    cwd = tmp_path if where == "elsewhere" else ROOT
    args = ("--cwd", "notebooks") if where == "notebooks" else ()
    env_figures = {"MRL_FIGURES_DIR": str(tmp_path / "figures")}
    done = subprocess.run(
        [*PAPERMILL, str(notebook), str(out), *args],
        cwd=cwd,
        env={**os.environ, **env_figures},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert any((tmp_path / "figures").glob("*.html"))
