"""The papermill batch runner, on tiny notebooks this file writes (real kernels, ~3 starts)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from mrl_analysis.app import runner as runner_module
from mrl_analysis.app.batch import check_batch, load_batch
from mrl_analysis.app.runner import (
    MARKER,
    MAX_OUTPUT_BYTES,
    _clean_outputs,
    _runs_this_interpreter,
    print_summary,
    resolve_kernel,
    run_batch,
)
from mrl_analysis.core import parallel

PLOT_PARAMS = 'title = "x"\nn = 3\noutput_dir = None\n'
PLOT_BODY = """\
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from mrl_analysis.core.progress import progress
from mrl_analysis.figures.save import figure_dir, save_figure

assert str(figure_dir()) == output_dir, (figure_dir(), output_dir)
for _ in progress(range(3), desc=f"rows · {title}", leave=True):
    pass
for _ in progress(range(3), desc="inner"):
    pass
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
    for name in ["plot-a", "plot-b"]:
        assert (project / "runs" / "tiny" / f"{name}.ipynb").is_file()
    executed = nbformat.read(str(project / "runs" / "tiny" / "plot-a.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'title = "a"' in injected[0].source

    fig_a = project / "figures" / "tiny" / "plot-a"
    assert _outputs(fig_a) == ["line_a.csv", "line_a.html"]
    assert (fig_a / MARKER).is_file()  # the runner made it: it may replace it later
    # defaults reach the notebooks declaring them; entry parameters override them
    assert pd.read_csv(fig_a / "line_a.csv")["y"].tolist() == [10, 11, 12, 13]
    fig_b = project / "figures" / "tiny" / "plot-b"
    assert pd.read_csv(fig_b / "line_b.csv")["y"].tolist() == [10, 11]
    assert not (project / "figures" / "tiny" / "broken").exists()  # no good run: no folder
    assert not list((project / "figures" / "tiny").glob(".*"))  # no staging folder left
    assert (project / "runs" / "tiny" / "broken.failed.ipynb").is_file()

    saved = pd.read_csv(project / "runs" / "tiny" / "summary.csv")
    assert saved["status"].tolist() == summary["status"].tolist()


def test_print_summary_points_at_the_failure(summary: pd.DataFrame) -> None:
    out = io.StringIO()
    print_summary(summary, file=out)
    text = out.getvalue()
    assert "FAILED broken" in text and "ZeroDivisionError" in text
    assert str(Path("runs") / "tiny" / "broken.failed.ipynb") in text
    assert "2/3 notebook(s) succeeded" in text


def _outputs(folder: Path) -> list[str]:
    """The figure files in ``folder`` (not the marker, not the shared plotly.js bundle)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".js" and p.name != MARKER)


def test_only_runs_the_named_entries_and_replaces_its_own_stale_figures(project: Path) -> None:
    def run() -> pd.DataFrame:
        return run_batch(
            project / "batches" / "tiny.yaml",
            only=["plot-b"],
            runs_dir="out/runs",
            figures_dir="out/figs",
            progress=False,
            force=True,
        )

    folder = project / "out" / "figs" / "tiny" / "plot-b"
    folder.mkdir(parents=True)
    (folder / "mine.png").write_text("the user's own file")
    refused = run().iloc[0]
    assert refused["status"] == "failed" and "was not made by the runner" in refused["error"]
    assert sorted(p.name for p in folder.iterdir()) == ["mine.png"]  # untouched

    (folder / "mine.png").unlink()  # an empty folder is adopted
    result = run()
    assert result["name"].tolist() == ["plot-b"] and result["status"].tolist() == ["ok"]
    assert (project / "out" / "runs" / "tiny" / "plot-b.ipynb").is_file()
    (folder / "stale.html").write_text("stale")  # the runner's folder: replaced as a whole
    assert run()["status"].tolist() == ["ok"]
    assert _outputs(folder) == ["line_b.csv", "line_b.html"]

    with pytest.raises(ValueError, match=r"no notebook named 'plot-c'.*did you mean 'plot-"):
        run_batch(project / "batches" / "tiny.yaml", only=["plot-c"], progress=False)


@pytest.mark.parametrize("where", ["../elsewhere", "/tmp/mrl-outside-test", "out/../../x"])
@pytest.mark.parametrize("key", ["runs_dir", "figures_dir"])
def test_folders_outside_the_batch_root_are_refused(project: Path, where: str, key: str) -> None:
    spec = {"name": "outside", "notebooks": ["nbs/plot.ipynb"], key: where}
    path = _write_batch(project, spec)
    with pytest.raises(ValueError, match=f"{key} .* is outside the batch root.*--allow-outside"):
        run_batch(path, progress=False)
    with pytest.raises(ValueError, match="is outside the batch root"):
        run_batch(project / "batches" / "tiny.yaml", progress=False, **{key: where})
    assert not Path(os.path.normpath(project / where)).exists()


def test_allow_outside_writes_where_the_user_said(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "chosen"
    result = run_batch(
        project / "batches" / "tiny.yaml",
        only=["plot-a"],
        figures_dir=out,
        runs_dir=out / "runs",
        progress=False,
        allow_outside=True,
    )
    assert result["status"].tolist() == ["ok"]
    assert _outputs(out / "tiny" / "plot-a") == ["line_a.csv", "line_a.html"]


def test_a_failed_run_keeps_the_last_good_outputs(project: Path) -> None:
    _notebook(project / "nbs" / "flaky.ipynb", 'path = "data/flaky.txt"\n', READ_BODY)
    batch = _write_batch(project, {"name": "flaky", "notebooks": ["nbs/flaky.ipynb"]})
    figures = project / "figures" / "flaky" / "flaky"
    executed = project / "runs" / "flaky" / "flaky.ipynb"
    (project / "data" / "flaky.txt").write_text("3")
    assert run_batch(batch, progress=False)["status"].tolist() == ["ok"]
    good = {p.name: p.read_bytes() for p in figures.iterdir()}
    good_executed = executed.read_bytes()

    (project / "data" / "flaky.txt").write_text("not a number")
    row = run_batch(batch, progress=False).iloc[0]
    assert row["status"] == "failed" and "ValueError" in row["error"]
    assert {p.name: p.read_bytes() for p in figures.iterdir()} == good
    assert executed.read_bytes() == good_executed
    assert row["executed"].endswith("flaky.failed.ipynb") and Path(row["executed"]).is_file()
    assert row["figures"] == 1  # what the figure folder holds: the last good run's

    (project / "data" / "flaky.txt").write_text("4")
    assert run_batch(batch, progress=False)["status"].tolist() == ["ok"]
    assert pd.read_csv(figures / "value.csv")["y"].tolist() == [4.0]
    assert not (project / "runs" / "flaky" / "flaky.failed.ipynb").exists()


KILL_BODY = """import time
from pathlib import Path

if Path("data/hang").exists():
    time.sleep(120)
"""


def test_records_of_finished_notebooks_survive_kill_9(project: Path, monkeypatch) -> None:
    _notebook(project / "nbs" / "hang.ipynb", "n = 1\n", KILL_BODY)
    spec = {
        "name": "killed",
        "notebooks": [
            {"name": "first", "path": "nbs/read.ipynb"},
            {"name": "second", "path": "nbs/hang.ipynb"},
        ],
    }
    if not (project / "nbs" / "read.ipynb").exists():
        _notebook(project / "nbs" / "read.ipynb", READ_PARAMS, READ_BODY)
        (project / "data" / "value.txt").write_text("1")
    batch = _write_batch(project, spec)
    (project / "data" / "hang").write_text("")
    record = project / "runs" / "killed" / ".first.inputs.json"
    # The library's digest is pinned in both runs: others editing the sources meanwhile
    # would invalidate the record for reasons this test is not about.
    code = (
        "import sys\nfrom mrl_analysis.app import runner\n"
        "runner._library_digest = lambda: 'pinned'\n"
        "runner.run_batch(sys.argv[1], progress=False)\n"
    )
    monkeypatch.setattr(runner_module, "_library_digest", lambda: "pinned")
    runner = subprocess.Popen([sys.executable, "-c", code, str(batch)])
    try:
        deadline = time.monotonic() + 120
        while not record.exists() and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.2)
        assert record.is_file(), "the first notebook's record was not written as it finished"
        time.sleep(1)  # the second notebook is now running
    finally:
        runner.kill()  # SIGKILL: nothing of the runner's own clean-up runs
        runner.wait()
    assert json.loads(record.read_text())["row"]["status"] == "ok"
    summary = pd.read_csv(project / "runs" / "killed" / "summary.csv")
    assert summary["name"].tolist() == ["first"]

    (project / "data" / "hang").unlink()
    again = run_batch(batch, progress=False).set_index("name")
    assert again.loc["first", "reused"] and not again.loc["second", "reused"]
    assert again["status"].eq("ok").all()


def test_executed_notebooks_keep_no_progress_bars(summary: pd.DataFrame, project: Path) -> None:
    executed = nbformat.read(str(project / "runs" / "tiny" / "plot-a.ipynb"), as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert "widgets" not in executed.metadata
    text = "".join(o.get("text", "") for o in outputs)
    assert re.search(r"rows · a: 3/3 it in \d\d:\d\d\n", text), text
    assert "inner" not in text and "%|" not in text  # leave=False loops leave nothing


def test_large_outputs_are_shrunk(tmp_path: Path) -> None:
    from PIL import Image

    image = Image.effect_noise((1600, 1200), 80).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()")
    big = base64.b64encode(buffer.getvalue()).decode()
    assert len(big) > MAX_OUTPUT_BYTES
    cell.outputs = [
        nbformat.v4.new_output("display_data", {"image/png": big, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", {"text/plain": "small"}),
    ]
    nb.cells = [cell]
    path = tmp_path / "big.ipynb"
    nbformat.write(nb, str(path))
    assert _clean_outputs(path) == 1
    shrunk = nbformat.read(str(path), as_version=4).cells[0].outputs
    assert len(shrunk[0]["data"]["image/png"]) <= MAX_OUTPUT_BYTES
    width = Image.open(io.BytesIO(base64.b64decode(shrunk[0]["data"]["image/png"]))).width
    assert width <= 1000 and "shown as a" in shrunk[0]["data"]["text/plain"]
    assert shrunk[1]["data"] == {"text/plain": "small"}


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Chromium (kaleido)")
def test_a_huge_plotly_output_becomes_a_png(tmp_path: Path) -> None:
    import numpy as np
    import plotly.graph_objects as go

    z = np.random.default_rng(0).random((400, 400)).round(6)
    fig = go.Figure(go.Heatmap(z=z))
    data = {"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/plain": "fig"}
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", json.loads(json.dumps(data, cls=_Enc)))]
    nb.cells = [cell]
    path = tmp_path / "plotly.ipynb"
    nbformat.write(nb, str(path))
    assert path.stat().st_size > 1_000_000
    assert _clean_outputs(path) == 1
    assert path.stat().st_size < MAX_OUTPUT_BYTES * 1.4
    out = nbformat.read(str(path), as_version=4).cells[0].outputs[0]["data"]
    assert set(out) == {"image/png", "text/plain"} and "plotly figure" in out["text/plain"]


class _Enc(json.JSONEncoder):
    def default(self, o):
        return o.tolist() if hasattr(o, "tolist") else super().default(o)


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


def test_unchanged_notebooks_are_reused_until_an_input_changes(project: Path, monkeypatch) -> None:
    monkeypatch.setattr(runner_module, "_library_digest", lambda: "pinned")  # see above
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
    resolved = check_batch(load_batch(spec), check_paths=False)
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
    params = check_batch(batch, check_paths=False)["study"]
    # The study's checkpoints live in its own project: absolute from this batch's root.
    repo = Path(__file__).resolve().parents[2]
    assert params == {
        "study": "tiny-imagenet",
        "dataset": "tiny-imagenet",
        "models": {
            "MRL": str(repo / "data/checkpoints/tiny-imagenet/mrl.pt"),
            "FF-16": str(repo / "data/checkpoints/tiny-imagenet/ff-16.pt"),
            "FF-512": str(repo / "data/checkpoints/tiny-imagenet/ff-512.pt"),
        },
        "cache_root": "my/cache",  # the batch's defaults win over the study's
        "eval_split": "train",  # and the entry's parameters over both
    }


def test_saved_progress_bar_widgets_are_dropped(tmp_path: Path) -> None:
    """Bars of code that bypasses core.progress: their stale "0%| 0/18" outputs and widget
    state go; other widgets (the explorer) stay with theirs."""

    def view(model: str, text: str) -> dict:
        data = {"application/vnd.jupyter.widget-view+json": {"model_id": model}, "text/plain": text}
        return nbformat.v4.new_output("display_data", data)

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [
        view("bar", "5-NN:   0%|          | 0/18 [00:00<?, ?it/s]"),
        view("ui", "VBox()"),
    ]
    nb.cells = [cell]
    state = {
        "bar": {"state": {"children": ["IPY_MODEL_text", "IPY_MODEL_shared"]}},
        "text": {"state": {}},
        "ui": {"state": {"children": ["IPY_MODEL_shared"]}},
        "shared": {"state": {}},
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    path = tmp_path / "bars.ipynb"
    nbformat.write(nb, str(path))
    assert _clean_outputs(path) == 1
    cleaned = nbformat.read(str(path), as_version=4)
    assert [o["data"]["text/plain"] for o in cleaned.cells[0].outputs] == ["VBox()"]
    kept = cleaned.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(kept) == {"ui", "shared"}


SLEEP_BODY = """\
import os
import time
from pathlib import Path

start = time.time()
time.sleep(3)
threads = os.environ.get("OMP_NUM_THREADS", "unset")
Path("data", "slept", f"{tag}.txt").write_text(f"{start} {time.time()} {threads}")
"""


def test_notebooks_run_in_parallel_and_share_the_cores(project: Path, monkeypatch) -> None:
    for name in parallel.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    _notebook(project / "nbs" / "sleep.ipynb", 'tag = "x"\n', SLEEP_BODY)
    slept = project / "data" / "slept"
    slept.mkdir(exist_ok=True)
    names = ["s1", "s2", "s3"]
    entries = [{"name": n, "path": "nbs/sleep.ipynb", "parameters": {"tag": n}} for n in names]
    batch = _write_batch(project, {"name": "parallel", "notebooks": entries})

    def spans() -> dict[str, tuple[float, float, str]]:
        out = {}
        for n in names:
            start, end, threads = (slept / f"{n}.txt").read_text().split()
            out[n] = (float(start), float(end), threads)
        return out

    def overlap(a: tuple, b: tuple) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    summary = run_batch(batch, progress=False, force=True, jobs=2)
    assert summary["name"].tolist() == names  # the batch's order, whichever finished first
    assert summary["status"].eq("ok").all()
    together = spans()
    assert overlap(together["s1"], together["s2"])
    shared = str(max(1, parallel.cores() // 2))
    assert {t for _, _, t in together.values()} == {shared}

    summary = run_batch(batch, progress=False, force=True, jobs=1)
    assert summary["status"].eq("ok").all()
    alone = spans()
    assert not any(overlap(alone[a], alone[b]) for a, b in [("s1", "s2"), ("s2", "s3")])
    assert {t for _, _, t in alone.values()} == {"unset"}  # the user's settings, untouched
