"""Headless runs of a batch's notebooks with papermill: outputs, summary, reuse, kernel.

The batch (which notebooks, which parameters) is parsed and checked by
:mod:`mrl_analysis.app.batch`; this module runs it. Nothing runs before every entry's
parameters check out; a failing notebook does not stop the others.

Outputs: each entry's figures go to ``<figures_dir>/<batch>/<name>/`` and its executed
notebook to ``<runs_dir>/<batch>/<name>.ipynb``; the summary table is
``<runs_dir>/<batch>/summary.csv``, rewritten as each notebook finishes. Both folders must
lie inside the batch root unless the caller passes ``allow_outside=True``
(``--allow-outside``).

A run never destroys the last good outputs: the notebook writes its figures into a fresh
hidden folder ``.<name>.running/`` (it reaches the kernel as ``$MRL_FIGURES_DIR``, and as
``output_dir`` to a notebook declaring that) and its executed notebook into
``.<name>.running.ipynb``; only when it succeeds do they replace the previous ones. A failed
run leaves the previous figures and executed notebook as they were and keeps its own executed
notebook, failing cell marked, as ``<name>.failed.ipynb``. The runner deletes only folders
holding its marker file ``.mrl-runner`` (written into every folder it creates); a figure
folder that exists without one and is not empty is left alone and that entry fails with a
message saying so (one written by an earlier version of the runner, as its run record
shows, is adopted).

Executed notebooks stay small and clean: the kernel runs with ``MRL_PROGRESS=log``
(:mod:`mrl_analysis.core.progress`: no progress bars saved, one line per finished long loop)
unless the caller's environment sets it, and any output over :data:`MAX_OUTPUT_BYTES` is
shrunk afterwards (plotly figures become a PNG of sane width, large PNGs are downscaled):
the interactive figure is in the figure folder. The kernel also gets ``MRL_PROJECT_ROOT``
set to the batch root, so that notebooks resolve relative paths as the batch means them.

Re-runs: a notebook whose inputs have not changed since its last successful run is not run
again (status ``ok``, ``reused`` true), provided its executed notebook and figures are still
there. Its inputs are the notebook file, the parameters it gets, the figure formats, the
``MRL_*`` environment variables, the ``mrl_analysis`` sources, and every file or folder that
a parameter value (given, or the notebook's default) names, relative to the batch root:
checkpoints, cache folders (their files' sizes and modification times). The record is
``<runs_dir>/<batch>/.<name>.inputs.json``, written (atomically) as soon as the notebook
succeeds, so a runner killed later keeps it, and refreshed when the batch ends, so that
caches one notebook adds for another do not invalidate the first. Data read through other
routes (a dataset found by its default location) is not tracked: pass ``force=True``
(``--force``) to run everything.

Parallel: notebooks whose inputs changed run ``jobs`` at a time (default: one per core, at
most 4), each from a worker process of its own (:mod:`mrl_analysis.core.parallel`), and
their kernels share the cores: each gets ``OMP_NUM_THREADS`` (and MKL's and OpenBLAS's) =
cores // jobs unless the caller's environment sets them. Most of a notebook is one thread
of Python, so on 2 cores two 1-thread kernels finish the demo's nine notebooks 1.4x sooner
than one 2-thread kernel at a time, four of unequal length 1.2x (benchmarks/bench_demo.py).
Summary rows keep the batch's order; status lines come as notebooks finish.

Kernel: by default the ``python3`` kernelspec, provided it starts this very interpreter (the
spec ipykernel installs into a virtual environment names plain ``python``, which
jupyter_client replaces by the running interpreter). When it points elsewhere — e.g. a
user-level spec for another Python shadows the venv's — a kernelspec ``mrl-analysis`` for
this interpreter is installed into ``sys.prefix`` once and used instead.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import as_completed
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from mrl_analysis.app.batch import (
    FIGURE_FORMATS,
    Batch,
    BatchEntry,
    check_batch,
    did_you_mean,
    load_batch,
    notebook_parameters,
)
from mrl_analysis.app.files import check_inside, shown
from mrl_analysis.core import parallel
from mrl_analysis.core.progress import PROGRESS_ENV, progress_write
from mrl_analysis.core.progress import progress as progress_bar

KERNEL_NAME = "mrl-analysis"
SUMMARY_COLUMNS = [
    "name",
    "notebook",
    "status",
    "seconds",
    "figures",
    "cell",
    "error",
    "executed",
    "figures_dir",
    "reused",
]
#: A folder named by a parameter with more files than this is not fingerprinted (the
#: notebook then always runs): walking, say, a whole dataset tree would cost more than it saves.
MAX_FINGERPRINT_FILES = 10_000
#: The file that marks a folder as the runner's own: only such folders are ever deleted.
MARKER = ".mrl-runner"
#: An executed notebook's output larger than this (bytes of JSON) is shrunk to a PNG.
MAX_OUTPUT_BYTES = 500_000
#: The width (pixels) a shrunk output is drawn at, at most.
MAX_OUTPUT_WIDTH = 1000

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _runs_this_interpreter(argv: list[str]) -> bool:
    """Whether a kernelspec's command starts the running interpreter."""
    exe = argv[0] if argv else ""
    major, minor = sys.version_info[:2]
    if exe in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True  # jupyter_client substitutes sys.executable for these
    # Compare folders without resolving symlinks: a venv's python links to the base one.
    return Path(exe).absolute().parent == Path(sys.executable).absolute().parent


def resolve_kernel(kernel_name: str | None = None) -> str:
    """The kernelspec to run notebooks with (see the module docstring for the choice)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    if kernel_name is not None:
        try:
            ksm.get_kernel_spec(kernel_name)
        except NoSuchKernel:
            available = sorted(ksm.find_kernel_specs())
            raise ValueError(
                f"no Jupyter kernel named {kernel_name!r}{did_you_mean(kernel_name, available)}; "
                f"available: {', '.join(available) or 'none'} (`jupyter kernelspec list`)"
            ) from None
        return kernel_name

    for name in ("python3", KERNEL_NAME):
        try:
            if _runs_this_interpreter(ksm.get_kernel_spec(name).argv):
                return name
        except NoSuchKernel:
            pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (mrl-analysis)", prefix=sys.prefix)
    if not _runs_this_interpreter(KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv):
        raise RuntimeError(
            f"a kernelspec {KERNEL_NAME!r} outside {sys.prefix} shadows the one just installed; "
            f"remove it (`jupyter kernelspec remove {KERNEL_NAME}`) or pass kernel_name"
        )
    return KERNEL_NAME


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    # The kernel inherits the runner's environment; papermill offers no per-kernel env.
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _count_figures(folder: Path) -> int:
    suffixes = {f".{fmt}" for fmt in FIGURE_FORMATS}
    return len(
        {
            p.stem
            for p in folder.rglob("*")
            if p.is_file() and p.suffix in suffixes and not p.name.startswith(".")
        }
    )


def _failing_line(traceback: list[str]) -> str:
    """The source line IPython marked with ``---->`` in the cell's own frame."""
    text = _ANSI_RE.sub("", "\n".join(traceback))
    frame = text.split("Cell In[", 1)[-1]
    marked = [ln for ln in frame.splitlines() if ln.lstrip().startswith("---->")]
    if not marked:
        return ""
    # "----> 3 1 / 0" → "line 3: 1 / 0"
    number, _, code = marked[0].split("---->", 1)[1].strip().partition(" ")
    return f"line {number}: {code.strip()}"


def _source_cell_index(executed: Path, cell_index: int) -> int:
    """Map papermill's failing-cell index to the index in the notebook the user edits.

    papermill counts the cell it injects after ``parameters`` and, in the saved notebook,
    adds error-marker cells; neither exists in the source notebook.
    """
    import nbformat

    def tags(cell: Any) -> list[str]:
        return cell.get("metadata", {}).get("tags", [])

    nb = nbformat.read(str(executed), as_version=4)
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in tags(c)]
    return cell_index - sum("injected-parameters" in tags(c) for c in cells[:cell_index])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _notebook_defaults(notebook: Path) -> list[Any]:
    values = []
    for spec in notebook_parameters(notebook).values():
        try:
            values.append(ast.literal_eval(spec["default"]))
        except (ValueError, SyntaxError):  # an expression, not a literal: names no path
            continue
    return values


def _file_states(values: list[Any], root: Path) -> list[tuple[str, int, int]] | None:
    """``(path, size, mtime_ns)`` of every file the strings in ``values`` name under ``root``;
    ``None`` when a named folder is too big to fingerprint."""
    files: set[Path] = set()
    for text in _strings(values):
        if not text.strip():  # "" would name the batch root itself
            continue
        try:
            path = (root / text).expanduser()
            if path.is_file():
                files.add(path)
            elif path.is_dir():
                found = list(itertools.islice(path.rglob("*"), MAX_FINGERPRINT_FILES + 1))
                if len(found) > MAX_FINGERPRINT_FILES:
                    return None
                # Lock files are touched by readers too; they say nothing about the content.
                files.update(p for p in found if p.is_file() and p.suffix != ".lock")
        except (OSError, ValueError):  # not a path at all (too long, NUL byte, ...)
            continue
    states = []
    for path in sorted(files):
        stat = path.stat()
        states.append((str(path), stat.st_size, stat.st_mtime_ns))
    return states


def _library_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).parents[1]
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".json", ".yaml"}:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def input_fingerprint(
    entry: BatchEntry, parameters: Mapping[str, Any], batch: Batch, library: str | None = None
) -> str | None:
    """A digest of everything a notebook run reads that the runner can see (module docstring:
    "Re-runs"); ``None`` when it cannot be fingerprinted. ``library``: the digest of the
    ``mrl_analysis`` sources when already computed (one per batch run)."""
    files = _file_states([parameters, _notebook_defaults(entry.notebook)], batch.root)
    if files is None:
        return None
    record = {
        "notebook": hashlib.sha256(entry.notebook.read_bytes()).hexdigest(),
        "parameters": parameters,
        "figure_formats": batch.figure_formats,
        "environment": {k: v for k, v in os.environ.items() if k.startswith("MRL_")},
        "library": library or _library_digest(),
        "files": files,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _record_path(entry: BatchEntry, batch: Batch) -> Path:
    return batch.runs_dir / batch.name / f".{entry.name}.inputs.json"


def _figure_dir(entry: BatchEntry, batch: Batch) -> Path:
    return batch.figures_dir / batch.name / entry.name


def _executed_path(entry: BatchEntry, batch: Batch, kind: str = "") -> Path:
    """The executed notebook; ``kind`` ``"failed"`` or ``"running"`` for the other copies."""
    if kind == "running":
        return batch.runs_dir / batch.name / f".{entry.name}.running.ipynb"
    return batch.runs_dir / batch.name / f"{entry.name}{'.' + kind if kind else ''}.ipynb"


def _read_record(entry: BatchEntry, batch: Batch) -> dict[str, Any] | None:
    try:
        saved = json.loads(_record_path(entry, batch).read_text())
    except (OSError, ValueError):  # none, or damaged: that only costs a re-run
        return None
    return saved if isinstance(saved, dict) else None


def _reusable(entry: BatchEntry, fingerprint: str | None, batch: Batch) -> dict[str, Any] | None:
    """The recorded row of the last successful run, if its inputs and outputs are unchanged."""
    saved = None if fingerprint is None else _read_record(entry, batch)
    if saved is None:
        return None
    row = saved.get("row", {})
    fig_dir = _figure_dir(entry, batch)
    if (
        saved.get("fingerprint") != fingerprint
        or not Path(row.get("executed") or "").is_file()
        or not fig_dir.is_dir()
        or _count_figures(fig_dir) != row.get("figures")
    ):
        return None
    return row


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_record(entry: BatchEntry, fingerprint: str | None, row: Mapping, batch: Batch) -> None:
    """Record a successful run's inputs; a run that cannot be fingerprinted has none."""
    if row["status"] != "ok":
        return  # the last good run's record stays with the outputs it describes
    if fingerprint is None:
        _record_path(entry, batch).unlink(missing_ok=True)
        return
    record = {"fingerprint": fingerprint, "row": dict(row)}
    _write_atomic(_record_path(entry, batch), json.dumps(record, default=str))


def _make_owned_dir(folder: Path, entry: BatchEntry, batch: Batch) -> None:
    """Create ``folder`` (empty) with the runner's marker in it."""
    folder.mkdir(parents=True)
    marker = {"batch": batch.name, "entry": entry.name, "created": time.time()}
    (folder / MARKER).write_text(json.dumps(marker))


def _owned(folder: Path, entry: BatchEntry, batch: Batch) -> bool:
    """Whether the runner may delete ``folder``: it holds the marker, or it is empty, or an
    earlier version of the runner made it (its run record names this very folder)."""
    if (folder / MARKER).is_file() or not any(folder.iterdir()):
        return True
    saved = _read_record(entry, batch) or {}
    return saved.get("row", {}).get("figures_dir") == str(folder)


def _remove_owned(folder: Path, entry: BatchEntry, batch: Batch) -> None:
    if folder.is_dir() and _owned(folder, entry, batch):
        shutil.rmtree(folder)


def _publish(staging: Path, final: Path, entry: BatchEntry, batch: Batch) -> None:
    """Replace ``final`` with ``staging``; the old folder is deleted only after the swap."""
    old = final.with_name(f".{final.name}.old")
    _remove_owned(old, entry, batch)
    if final.exists():
        final.rename(old)
        if not (old / MARKER).exists():  # adopted (empty, or an earlier runner's): mark it
            (old / MARKER).write_text(json.dumps({"batch": batch.name, "entry": entry.name}))
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)  # checked by _owned before this run started


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: The text a tqdm bar's widget leaves behind: "desc:  40%|████      | 2/5 [00:01<...]".
_BAR_TEXT = re.compile(r"\d+%\|.*\| *\d+(\.\d+)?[kMG]?/(\d+(\.\d+)?[kMG]?|\?) \[")


def _is_progress_bar(output: Mapping[str, Any]) -> bool:
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return _WIDGET_VIEW in data and bool(_BAR_TEXT.search(text))


def _widget_models(state: Mapping[str, Any], roots: set[str]) -> set[str]:
    """The widget models reachable from ``roots`` (children, layouts, styles)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen or model not in state:
            continue
        seen.add(model)
        text = json.dumps(state[model].get("state", {}))
        todo.extend(re.findall(r'IPY_MODEL_([^"\\]+)', text))
    return seen


def _clean_outputs(path: Path, limit: int = 0) -> int:
    """Make the executed notebook at ``path`` small and clean: drop the widgets of progress
    bars (code that bypasses :mod:`mrl_analysis.core.progress` would save them stale, e.g.
    ``0%| 0/18``) with their saved widget state, and shrink every output over ``limit`` bytes
    (default :data:`MAX_OUTPUT_BYTES`) to a PNG. Returns how many outputs changed."""
    import nbformat

    limit = limit or MAX_OUTPUT_BYTES
    nb = nbformat.read(str(path), as_version=4)
    changed = 0
    dropped: set[str] = set()
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if _is_progress_bar(output):
                dropped.add(output["data"][_WIDGET_VIEW]["model_id"])
                continue
            data = output.get("data")
            if data and len(json.dumps(data)) > limit:
                smaller = _smaller_output(data, limit)
                if smaller is not None:
                    output["data"], output["metadata"] = smaller, {}
                    changed += 1
            kept.append(output)
        changed += len(cell.get("outputs", [])) - len(kept)
        if "outputs" in cell:
            cell["outputs"] = kept
    widgets = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state")
    if dropped and widgets is not None:
        views = {
            o["data"][_WIDGET_VIEW]["model_id"]
            for c in nb.cells
            for o in c.get("outputs", [])
            if _WIDGET_VIEW in o.get("data", {})
        }
        unused = _widget_models(widgets, dropped) - _widget_models(widgets, views)
        for model in unused:
            del widgets[model]
        if not widgets:
            del nb.metadata["widgets"]
    if changed:
        tmp = path.with_name(f".{path.name}.clean.tmp")
        nbformat.write(nb, str(tmp))
        tmp.replace(path)
    return changed


def _smaller_output(data: Mapping[str, Any], limit: int) -> dict[str, Any] | None:
    """A PNG version of a large plotly figure or PNG output, or None when neither."""
    import base64
    import io

    figure = data.get("application/vnd.plotly.v1+json")
    if figure is not None:
        png = _plotly_png(figure)
        what = f"plotly figure ({len(json.dumps(figure)) / 1e6:.1f} MB)"
    elif "image/png" in data:
        png = base64.b64decode(data["image/png"])
        what = f"image ({len(png) / 1e6:.1f} MB)"
    else:
        return None
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    while True:
        if image.width > MAX_OUTPUT_WIDTH:
            height = round(image.height * MAX_OUTPUT_WIDTH / image.width)
            image = image.resize((MAX_OUTPUT_WIDTH, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        if len(encoded) <= limit or image.width < 200:
            break
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4))
    note = (
        f"[{what} shown as a {image.width}x{image.height} PNG to keep the executed notebook "
        "small; the interactive version is in the figure folder, or re-run the cell]"
    )
    return {"image/png": encoded, "text/plain": note}


def _plotly_png(figure: Mapping[str, Any]) -> bytes:
    import plotly.io as pio

    from mrl_analysis.figures.save import _prepare_static_export

    _prepare_static_export()
    fig = {k: v for k, v in figure.items() if k in ("data", "layout")}
    width = (fig.get("layout") or {}).get("width") or 900
    return pio.to_image(fig, format="png", scale=min(1.0, MAX_OUTPUT_WIDTH / width), validate=False)


def _run_entry(
    entry: BatchEntry,
    parameters: dict[str, Any],
    batch: Batch,
    kernel_name: str,
) -> dict[str, Any]:
    from papermill import execute_notebook
    from papermill.exceptions import PapermillExecutionError

    final = _figure_dir(entry, batch)
    executed = _executed_path(entry, batch)
    row: dict[str, Any] = {
        "name": entry.name,
        "notebook": str(entry.notebook),
        "status": "failed",
        "seconds": 0.0,
        "figures": _count_figures(final) if final.is_dir() else 0,
        "cell": None,
        "error": "",
        "executed": str(executed) if executed.is_file() else "",
        "figures_dir": str(final),
        "reused": False,
    }
    # Leftovers of a killed run are the runner's own (marked) folders.
    staging = final.with_name(f".{final.name}.running")
    _remove_owned(staging, entry, batch)
    for folder in (final, staging):
        if folder.exists() and not (folder.is_dir() and _owned(folder, entry, batch)):
            row["error"] = (
                f"not run: {shown(folder)} exists and was not made by the runner (no {MARKER} "
                "marker), so it is not replaced; move it away or set another figures_dir"
            )
            return row
    _make_owned_dir(staging, entry, batch)
    running = _executed_path(entry, batch, "running")
    running.parent.mkdir(parents=True, exist_ok=True)
    running.unlink(missing_ok=True)
    if "output_dir" in parameters:
        parameters = {**parameters, "output_dir": str(staging)}

    env = {
        "MRL_FIGURES_DIR": str(staging),
        "MRL_PROJECT_ROOT": str(batch.root),
        PROGRESS_ENV: os.environ.get(PROGRESS_ENV) or "log",
    }
    if batch.figure_formats is not None:
        env["MRL_FIGURE_FORMATS"] = ",".join(batch.figure_formats)

    start = time.perf_counter()
    try:
        with _environ(env):
            execute_notebook(
                str(entry.notebook),
                str(running),
                parameters=parameters,
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=str(batch.root),
                # ipykernel >= 7 warns on every start that TCP is unencrypted (it is localhost)
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        row["status"] = "ok"
    except PapermillExecutionError as err:
        row["cell"] = _source_cell_index(running, err.cell_index)
        where = f"cell {row['cell']} (In [{err.exec_count}])"
        line = _failing_line(err.traceback)
        row["error"] = f"{where}{', ' + line if line else ''}: {err.ename}: {err.evalue}"
    except Exception as err:  # a kernel that dies or will not start fails only this entry
        first_line = next(iter(str(err).strip().splitlines()), "")
        row["error"] = f"{type(err).__name__}: {first_line}"
    row["seconds"] = round(time.perf_counter() - start, 2)

    if running.is_file():
        try:
            _clean_outputs(running)
        except Exception as err:  # a smaller notebook is a nicety: never fail a run over it
            progress_write(f"{entry.name}: large outputs kept as they are ({err})")
    if row["status"] == "ok":
        _publish(staging, final, entry, batch)
        running.replace(executed)
        _executed_path(entry, batch, "failed").unlink(missing_ok=True)
        row["executed"], row["figures"] = str(executed), _count_figures(final)
    else:
        shutil.rmtree(staging)  # made by this run, marker inside
        if running.is_file():
            failed = _executed_path(entry, batch, "failed")
            running.replace(failed)
            row["executed"] = str(failed)
        else:
            row["executed"] = ""
    return row


def run_batch(
    batch: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    only: list[str] | None = None,
    runs_dir: str | os.PathLike | None = None,
    figures_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    force: bool = False,
    allow_outside: bool = False,
    jobs: int | None = None,
) -> pd.DataFrame:
    """Run a batch's notebooks headless; return the summary, one row per notebook run.

    ``batch``: a batch file or study spec (:mod:`mrl_analysis.app.batch`), a dict of a batch
    file's shape, or ``None`` for the demo study's batch.
    ``only``: entry names to run (the whole batch is still validated). ``runs_dir`` /
    ``figures_dir`` override the batch's (relative ones resolve against the batch root);
    outside the batch root only with ``allow_outside=True``.
    Everything is validated before the first notebook starts; a failing notebook does not
    stop the others and leaves its previous outputs in place. Summary columns: ``name,
    notebook, status ("ok" | "failed"), seconds, figures`` (distinct figure names in its
    folder), ``cell`` (index of the failing cell in the source notebook), ``error`` (cell,
    ``In [n]``, failing line, exception), ``executed`` (the executed notebook; on failure
    ``<name>.failed.ipynb``, failing cell marked), ``figures_dir``, ``reused`` (true: its
    inputs were unchanged since its last successful run, so it was not run again;
    ``force=True`` runs every notebook). Also saved as ``<runs_dir>/<batch>/summary.csv``,
    rewritten after every notebook. ``jobs``: notebooks run at once (default: one per core,
    at most :data:`~mrl_analysis.core.parallel.MAX_JOBS`; see the module docstring).
    """
    spec = load_batch(batch)
    spec = replace(
        spec,
        runs_dir=check_inside(
            spec.runs_dir if runs_dir is None else runs_dir,
            spec.root,
            "runs_dir",
            allow_outside=allow_outside,
        ),
        figures_dir=check_inside(
            spec.figures_dir if figures_dir is None else figures_dir,
            spec.root,
            "figures_dir",
            allow_outside=allow_outside,
        ),
    )
    parameters = check_batch(spec)

    entries = spec.entries
    if only is not None:
        names = [e.name for e in spec.entries]
        for wanted in only:
            if wanted not in names:
                raise ValueError(
                    f"batch {spec.name!r} has no notebook named {wanted!r}"
                    f"{did_you_mean(wanted, names)}; its names are: {', '.join(names)}"
                )
        entries = [e for e in spec.entries if e.name in set(only)]
    kernel = resolve_kernel(kernel_name)

    found: list[dict[str, Any] | None] = [None] * len(entries)
    summary_path = spec.runs_dir / spec.name / "summary.csv"
    library = _library_digest()  # the sources do not change during a batch
    with progress_bar(
        total=len(entries), desc=f"batch {spec.name}", unit="nb", disable=not progress
    ) as bar:

        def done(i: int, row: dict[str, Any]) -> None:
            if not row["reused"]:
                # Now, not at the end: a runner killed later keeps what already finished.
                entry = entries[i]
                after = input_fingerprint(entry, parameters[entry.name], spec, library)
                _write_record(entry, after, row, spec)
            found[i] = row
            finished = [r for r in found if r is not None]
            _write_atomic(summary_path, _summary(finished).to_csv(index=False))
            if progress:
                progress_write(_status_line(row))
            bar.set_postfix_str(row["name"])
            bar.update()

        to_run = []
        for i, entry in enumerate(entries):
            start = time.perf_counter()
            fingerprint = input_fingerprint(entry, parameters[entry.name], spec, library)
            row = None if force else _reusable(entry, fingerprint, spec)
            if row is None:
                to_run.append(i)
            else:
                done(i, {**row, "seconds": round(time.perf_counter() - start, 2), "reused": True})
        jobs = parallel.n_jobs(jobs, len(to_run))
        if jobs == 1:
            for i in to_run:
                entry = entries[i]
                done(i, _run_entry(entry, parameters[entry.name], spec, kernel))
        else:
            # Worker processes, not threads: each sets its kernel's environment (figure
            # folder, threads) in os.environ, which papermill hands to the kernel it starts.
            with parallel.worker_pool(jobs) as pool:
                running = {
                    pool.submit(
                        _run_entry, entries[i], parameters[entries[i].name], spec, kernel
                    ): i
                    for i in to_run
                }
                for future in as_completed(running):
                    done(running[future], future.result())
    rows = [r for r in found if r is not None]
    # Refreshed after the whole batch: a later notebook may add caches an earlier one names.
    for entry, row in zip(entries, rows, strict=True):
        if not row["reused"]:
            after = input_fingerprint(entry, parameters[entry.name], spec, library)
            _write_record(entry, after, row, spec)
    return _summary(rows)


def _summary(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"cell": "Int64"})


def _status_line(row: Mapping[str, Any]) -> str:
    text = f"[{row['status']:>6}] {row['name']}  {row['seconds']:.1f}s  {row['figures']} figure(s)"
    if row["reused"]:
        text += "  (inputs unchanged since its last run: not run again)"
    return f"{text}  {row['error']}" if row["error"] else text


def print_summary(summary: pd.DataFrame, file: TextIO | None = None) -> None:
    """Print the summary table, then where each failure happened and its executed notebook."""
    out = file or sys.stdout
    table = summary[["name", "status", "seconds", "figures", "error"]]
    print(table.to_string(index=False, max_colwidth=80), file=out)
    failed = summary[summary["status"] != "ok"]
    for row in failed.itertuples():
        print(f"\nFAILED {row.name}: {row.error}", file=out)
        if row.executed:
            print(f"  executed notebook (failing cell marked): {row.executed}", file=out)
    n_ok = int((summary["status"] == "ok").sum())
    print(
        f"\n{n_ok}/{len(summary)} notebook(s) succeeded; figures under "
        f"{Path(summary['figures_dir'].iloc[0]).parent if len(summary) else '-'}",
        file=out,
    )
