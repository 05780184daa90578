"""Notebooks are stored clean and parameterizable, and the default batch matches them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from mrl_analysis.app.runner import DEFAULT_BATCH, check_batch, load_batch

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _default_batch_paths() -> list[Path]:
    spec = yaml.safe_load(DEFAULT_BATCH.read_text())
    paths = [e if isinstance(e, str) else e["path"] for e in spec["notebooks"]]
    return [REPO / p for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_outputs = [i for i, c in enumerate(nb.cells) if c.get("outputs")]
    assert not with_outputs, f"{path.name}: cells {with_outputs} have outputs; clear them"
    counted = [i for i, c in enumerate(nb.cells) if c.get("execution_count") is not None]
    assert not counted, f"{path.name}: cells {counted} have execution counts; clear them"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state; clear it"

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert code and code[0] is tagged[0], f"{path.name}: parameters must be the first code cell"
    # papermill reads the parameters cell with the translator of the notebook's language
    assert nb.metadata.get("kernelspec", {}).get("language") == "python", path.name


def test_default_batch_notebooks_exist() -> None:
    missing = [str(p.relative_to(REPO)) for p in _default_batch_paths() if not p.is_file()]
    assert not missing, f"{DEFAULT_BATCH.name} lists notebooks that do not exist: {missing}"


def test_default_batch_parameters_match_the_notebooks() -> None:
    if not all(p.is_file() for p in _default_batch_paths()):
        pytest.skip("a default-batch notebook is missing (see test_default_batch_notebooks_exist)")
    spec = yaml.safe_load(DEFAULT_BATCH.read_text())
    check_batch(load_batch({**spec, "root": str(REPO)}))
