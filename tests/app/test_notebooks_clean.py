"""Notebooks are stored clean and parameterizable, and the studies' batches match them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from mrl_analysis.app.batch import check_batch, load_batch
from mrl_analysis.app.studies import list_studies, load_study

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _batch_paths(study: str) -> list[Path]:
    spec = load_study(study).batch
    return [REPO / (e if isinstance(e, str) else e["path"]) for e in spec["notebooks"]]


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


@pytest.mark.parametrize("study", list_studies())
def test_study_notebooks_exist(study: str) -> None:
    missing = [str(p.relative_to(REPO)) for p in _batch_paths(study) if not p.is_file()]
    assert not missing, f"study {study} lists notebooks that do not exist: {missing}"


@pytest.mark.parametrize("study", list_studies())
def test_study_parameters_match_the_notebooks(study: str) -> None:
    if not all(p.is_file() for p in _batch_paths(study)):
        pytest.skip("a notebook of the study is missing (see test_study_notebooks_exist)")
    batch = load_batch(load_study(study).batch_spec())
    assert set(check_batch(batch, check_paths=False)) == {e.name for e in batch.entries}
