"""Batch files are checked before anything runs: YAML syntax, parameter types derived from
each notebook's parameters cell, and the files that path-like values name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mrl_analysis.app.batch import (
    check_batch,
    describe_schema,
    load_batch,
    notebook_parameters,
    parameter_schema,
    type_problems,
)
from mrl_analysis.app.runner import run_batch

ROOT = Path(__file__).resolve().parents[2]
NB01 = "notebooks/01_per_dimension_accuracy.ipynb"


def _problems(tmp_path: Path, **defaults) -> str:
    """The message of the batch that runs notebook 01 with ``defaults``."""
    spec = {"name": "x", "root": str(ROOT), "defaults": defaults, "notebooks": [NB01]}
    with pytest.raises(ValueError) as info:
        check_batch(load_batch(spec))
    return str(info.value)


def test_malformed_yaml_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nnotebooks:\n  - path: a.ipynb\n    parameters: {k: [1, 2}\n")
    with pytest.raises(ValueError) as info:
        load_batch(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4:") and "invalid YAML" in message
    assert "\n" not in message and "Traceback" not in message


def test_types_come_from_the_parameters_cell(tmp_path: Path) -> None:
    message = _problems(tmp_path, models="data/checkpoints/x.pt", knn_k="five", tolerance=True)
    assert "nothing was run" in message
    assert "models = 'data/checkpoints/x.pt' should be a mapping of names to paths" in message
    assert "knn_k = 'five' should be a list of integers (the notebook's default: [1, 5])" in message
    assert "tolerance = True should be a number" in message
    assert "knn_k = [1, 'five']" in _problems(tmp_path, knn_k=[1, "five"])
    assert "interpolation_steps = 2.0 should be an integer" in _problems(
        tmp_path, interpolation_steps=2.0
    )


def test_the_schema_of_a_parameters_cell() -> None:
    declared = notebook_parameters(ROOT / "notebooks" / "05_fewshot_fluid.ipynb")
    schema = parameter_schema(declared)["properties"]
    assert describe_schema(schema["shots"]) == "a list of integers"
    # "None: all classes" in its comment: null is allowed, in the list and for the list
    assert describe_schema(schema["ways"]) == "a list of integers or nulls or null"
    assert describe_schema(schema["models"]) == "a mapping of names to paths or null"
    assert describe_schema(schema["stream_samples"]) == "any value"  # None, no known type
    assert type_problems({"ways": None, "stream_samples": "anything", "seed": 3}, declared) == []
    assert type_problems({"seed": None}, declared) == [
        "seed = None should be an integer (the notebook's default: 0)"
    ]


def test_a_missing_checkpoint_is_found_before_the_first_notebook(tmp_path: Path) -> None:
    real = tmp_path / "real.pt"
    real.write_bytes(b"")
    spec = {
        "name": "missing",
        "root": str(tmp_path),
        "defaults": {"models": {"MRL": str(real), "FF": "ckpt/ff.pt"}, "hierarchy": "h.json"},
        "notebooks": [str(ROOT / NB01), str(ROOT / "notebooks" / "02_superclass_trends.ipynb")],
    }
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError) as info:
        run_batch(path, progress=False)
    message = str(info.value)
    assert f"models['FF']: {tmp_path / 'ckpt' / 'ff.pt'} does not exist" in message
    assert f"hierarchy: {tmp_path / 'h.json'} does not exist" in message
    assert "'MRL'" not in message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "figures").exists()
