"""The papermill batch runner, on tiny notebooks this file writes (real kernels, ~3 starts)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from mrl_analysis.app.batch import check_batch, load_batch
from mrl_analysis.app.runner import (
    _runs_this_interpreter,
    print_summary,
    resolve_kernel,
    run_batch,
)

PLOT_PARAMS = 'title = "x"\nn = 3\noutput_dir = None\n'
PLOT_BODY = """\
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from mrl_analysis.figures.save import figure_dir, save_figure

assert str(figure_dir()) == output_dir, (figure_dir(), output_dir)
# a relative data path only works when the kernel runs in the batch root
offset = float(Path("data/offset.txt").read_text())
table = pd.DataFrame({"x": range(n), "y": [offset + i for i in range(n)]})
fig = go.Figure(go.Scatter(x=table["x"], y=table["y"], name=title))
save_figure(fig, table, f"line_{title}", formats=os.environ["MRL_FIGURE_FORMATS"].split(","))
"""


def _notebook(path: Path, params: str, *bodies: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell]
    nb.cells += [nbformat.v4.new_code_cell(b) for b in bodies]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project: pyproject.toml, two notebooks, a data file and a batch file."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("[project]\nname = 'tiny'\n")
    (root / "data").mkdir()
    (root / "data" / "offset.txt").write_text("10")
    _notebook(root / "nbs" / "plot.ipynb", PLOT_PARAMS, PLOT_BODY)
    _notebook(root / "nbs" / "broken.ipynb", "divisor = 0\n", "x = 1", "y = 2\nz = 1 / divisor")
    batch = {
        "name": "tiny",
        "figure_formats": ["html"],
        "defaults": {"n": 4},  # only plot.ipynb declares n
        "notebooks": [
            {"name": "plot-a", "path": "nbs/plot.ipynb", "parameters": {"title": "a"}},
            {"name": "broken", "path": "nbs/broken.ipynb", "parameters": {"divisor": 0}},
            {"name": "plot-b", "path": "nbs/plot.ipynb", "parameters": {"title": "b", "n": 2}},
        ],
    }
    (root / "batches").mkdir()
    (root / "batches" / "tiny.yaml").write_text(yaml.safe_dump(batch, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def summary(project: Path) -> pd.DataFrame:
    return run_batch(project / "batches" / "tiny.yaml", progress=False)


def _write_batch(root: Path, spec: dict) -> Path:
    path = root / "batches" / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_batch_runs_past_a_failure_and_reports_it(summary: pd.DataFrame, project: Path) -> None:
    rows = summary.set_index("name")
    assert list(summary["name"]) == ["plot-a", "broken", "plot-b"]
    assert rows.loc["plot-a", "status"] == "ok"
    assert rows.loc["plot-b", "status"] == "ok"  # ran after the failure
    assert rows.loc["broken", "status"] == "failed"
    assert rows.loc[["plot-a", "plot-b"], "error"].eq("").all()
    assert rows.loc[["plot-a", "plot-b"], "figures"].tolist() == [1, 1]
    assert (summary["seconds"] > 0).all()

    error = rows.loc["broken", "error"]
    assert "ZeroDivisionError" in error and "z = 1 / divisor" in error and "line 2" in error
    cell = rows.loc["broken", "cell"]
    source = nbformat.read(str(project / "nbs" / "broken.ipynb"), as_version=4)
    assert source.cells[cell].source.endswith("z = 1 / divisor")
    assert f"cell {cell} (In [4])" in error  # the injected cell ran as In [2]
    assert pd.isna(rows.loc["plot-a", "cell"])


def test_outputs_land_under_runs_and_figures(summary: pd.DataFrame, project: Path) -> None:
    for name in ["plot-a", "broken", "plot-b"]:
        assert (project / "runs" / "tiny" / f"{name}.ipynb").is_file()
    executed = nbformat.read(str(project / "runs" / "tiny" / "plot-a.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'title = "a"' in injected[0].source

    fig_a = project / "figures" / "tiny" / "plot-a"
    assert sorted(p.name for p in fig_a.iterdir()) == ["line_a.csv", "line_a.html"]
    # defaults reach the notebooks declaring them; entry parameters override them
    assert pd.read_csv(fig_a / "line_a.csv")["y"].tolist() == [10, 11, 12, 13]
    fig_b = project / "figures" / "tiny" / "plot-b"
    assert pd.read_csv(fig_b / "line_b.csv")["y"].tolist() == [10, 11]
    assert list((project / "figures" / "tiny" / "broken").iterdir()) == []

    saved = pd.read_csv(project / "runs" / "tiny" / "summary.csv")
    assert saved["status"].tolist() == summary["status"].tolist()


def test_print_summary_points_at_the_failure(summary: pd.DataFrame) -> None:
    out = io.StringIO()
    print_summary(summary, file=out)
    text = out.getvalue()
    assert "FAILED broken" in text and "ZeroDivisionError" in text
    assert str(Path("runs") / "tiny" / "broken.ipynb") in text
    assert "2/3 notebook(s) succeeded" in text


def test_only_runs_the_named_entries_and_replaces_stale_figures(project: Path) -> None:
    stale = project / "out" / "figs" / "tiny" / "plot-b" / "old.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    result = run_batch(
        project / "batches" / "tiny.yaml",
        only=["plot-b"],
        runs_dir="out/runs",
        figures_dir="out/figs",
        progress=False,
    )
    assert result["name"].tolist() == ["plot-b"] and result["status"].tolist() == ["ok"]
    assert sorted(p.name for p in stale.parent.iterdir()) == ["line_b.csv", "line_b.html"]
    assert (project / "out" / "runs" / "tiny" / "plot-b.ipynb").is_file()

    with pytest.raises(ValueError, match=r"no notebook named 'plot-c'.*did you mean 'plot-"):
        run_batch(project / "batches" / "tiny.yaml", only=["plot-c"], progress=False)


def test_unknown_parameter_is_rejected_before_anything_runs(project: Path) -> None:
    spec = {
        "name": "typo",
        "notebooks": [
            {"name": "ok", "path": "nbs/plot.ipynb", "parameters": {"title": "a"}},
            {"name": "bad", "path": "nbs/plot.ipynb", "parameters": {"titel": "a"}},
        ],
    }
    with pytest.raises(ValueError) as info:
        run_batch(_write_batch(project, spec), progress=False)
    message = str(info.value)
    assert "nothing was run" in message
    assert "unknown parameter 'titel'" in message and "did you mean 'title'" in message
    assert "title, n, output_dir" in message
    assert not (project / "runs" / "typo").exists()


@pytest.mark.parametrize(
    ("defaults", "parameters", "expected"),
    [
        ({"nn": 3}, {}, r"'nn' is not a parameter of any notebook.*did you mean 'n'"),
        ({}, {"output_dir": "x"}, r"'output_dir' is set by the runner"),
    ],
)
def test_bad_defaults_and_output_dir_are_rejected(
    project: Path, defaults: dict, parameters: dict, expected: str
) -> None:
    spec = {
        "name": "bad",
        "defaults": defaults,
        "notebooks": [{"path": "nbs/plot.ipynb", "parameters": parameters}],
    }
    with pytest.raises(ValueError, match=expected):
        check_batch(load_batch(_write_batch(project, spec)))


def test_batch_shape_errors(project: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key 'notebook'.*did you mean 'notebooks'"):
        load_batch({"name": "x", "notebook": ["nbs/plot.ipynb"], "root": str(project)})
    with pytest.raises(ValueError, match="duplicate name 'plot'"):
        load_batch({"name": "x", "root": str(project), "notebooks": ["nbs/plot.ipynb"] * 2})
    with pytest.raises(FileNotFoundError, match="resolve against the batch root"):
        load_batch({"name": "x", "root": str(project), "notebooks": ["nbs/missing.ipynb"]})
    with pytest.raises(ValueError, match="unknown figure format 'jpg'"):
        load_batch(
            {"name": "x", "root": str(project), "notebooks": ["nbs/plot.ipynb"],
             "figure_formats": ["png", "jpg"]}
        )  # fmt: skip
    with pytest.raises(ValueError, match="plain file name"):
        load_batch({"name": "../x", "root": str(project), "notebooks": ["nbs/plot.ipynb"]})
    with pytest.raises(FileNotFoundError, match="batch file not found"):
        load_batch(project / "batches" / "nope.yaml")


def test_batch_file_paths_resolve_against_its_project(project: Path) -> None:
    batch = load_batch(project / "batches" / "tiny.yaml")
    assert batch.root == project
    assert batch.entries[0].notebook == project / "nbs" / "plot.ipynb"
    assert batch.figures_dir == project / "figures" and batch.runs_dir == project / "runs"
    assert batch.figure_formats == ("html",)


def test_kernel_runs_this_interpreter() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    name = resolve_kernel()
    assert _runs_this_interpreter(KernelSpecManager().get_kernel_spec(name).argv)
    assert _runs_this_interpreter(["python"]) and _runs_this_interpreter([sys.executable])
    assert not _runs_this_interpreter(["/nonexistent/env/bin/python"])
    with pytest.raises(ValueError, match="no Jupyter kernel named 'pyhton3'.*did you mean"):
        resolve_kernel("pyhton3")


READ_PARAMS = 'path = "data/value.txt"\n'
READ_BODY = """\
import pandas as pd

from mrl_analysis.figures.save import save_figure
import plotly.graph_objects as go

value = float(open(path).read())
table = pd.DataFrame({"x": [0], "y": [value]})
save_figure(go.Figure(go.Bar(x=table["x"], y=table["y"])), table, "value", formats=["html"])
"""


def test_unchanged_notebooks_are_reused_until_an_input_changes(project: Path) -> None:
    _notebook(project / "nbs" / "read.ipynb", READ_PARAMS, READ_BODY)
    (project / "data" / "value.txt").write_text("1")
    batch = _write_batch(
        project, {"name": "reuse", "notebooks": [{"name": "read", "path": "nbs/read.ipynb"}]}
    )
    csv = project / "figures" / "reuse" / "read" / "value.csv"

    def run(**kwargs) -> pd.Series:
        row = run_batch(batch, progress=False, **kwargs).iloc[0]
        assert row["status"] == "ok" and row["figures"] == 1, row["error"]
        return row

    assert not run()["reused"]
    again = run()
    assert again["reused"] and again["executed"].endswith("read.ipynb")
    assert pd.read_csv(csv)["y"].tolist() == [1.0]
    # The file the notebook's default parameter names changes: it runs again.
    (project / "data" / "value.txt").write_text("250")
    assert not run()["reused"]
    assert pd.read_csv(csv)["y"].tolist() == [250.0]
    assert run()["reused"]
    assert not run(force=True)["reused"]
    # Outputs gone, or other parameters: it runs again.
    for p in csv.parent.iterdir():
        p.unlink()
    assert not run()["reused"] and csv.is_file()
    (project / "data" / "other.txt").write_text("7")
    batch.write_text(
        yaml.safe_dump(
            {
                "name": "reuse",
                "notebooks": [
                    {
                        "name": "read",
                        "path": "nbs/read.ipynb",
                        "parameters": {"path": "data/other.txt"},
                    }
                ],
            }
        )
    )
    assert not run()["reused"]
    assert pd.read_csv(csv)["y"].tolist() == [7.0]


def test_readme_imagenet_batch_validates() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text()
    block = re.search(r"```yaml\n(name: imagenet\n.*?)```", text, re.S)
    assert block, "README lost its ImageNet batch example"
    spec = {**yaml.safe_load(block.group(1)), "root": str(root)}
    resolved = check_batch(load_batch(spec))
    assert resolved["01_per_dimension_accuracy"]["eval_split"] == "val"
    assert resolved["01_per_dimension_accuracy"]["baseline_model"] == "FF-2048"


def test_a_batch_naming_a_study_gives_its_parameters_to_the_notebooks(project: Path) -> None:
    _notebook(
        project / "nbs" / "study.ipynb",
        'study = "demo"\ndataset = None\nmodels = None\ncache_root = None\neval_split = "x"\n',
    )
    spec = {
        "name": "with-study",
        "study": "tiny-imagenet",
        "defaults": {"cache_root": "my/cache"},
        "notebooks": [{"path": "nbs/study.ipynb", "parameters": {"eval_split": "train"}}],
    }
    batch = load_batch(_write_batch(project, spec))
    assert batch.study == "tiny-imagenet"
    params = check_batch(batch)["study"]
    # The study's checkpoints live in its own project: absolute from this batch's root.
    repo = Path(__file__).resolve().parents[2]
    assert params == {
        "study": "tiny-imagenet",
        "dataset": "tiny-imagenet",
        "models": {
            "MRL": str(repo / "data/checkpoints/tiny-imagenet/mrl.pt"),
            "FF-512": str(repo / "data/checkpoints/tiny-imagenet/ff-512.pt"),
        },
        "cache_root": "my/cache",  # the batch's defaults win over the study's
        "eval_split": "train",  # and the entry's parameters over both
    }
