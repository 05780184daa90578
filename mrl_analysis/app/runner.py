"""Headless runs of a batch's notebooks with papermill: outputs, summary, reuse, kernel.

The batch (which notebooks, which parameters) is parsed and checked by
:mod:`mrl_analysis.app.batch`; this module runs it. Nothing runs before every entry's
parameters check out; a failing notebook does not stop the others.

Each entry's figure folder ``<figures_dir>/<batch>/<name>/`` is emptied before it runs and
reaches the kernel as ``$MRL_FIGURES_DIR`` (``mrl_analysis.figures.save.figure_dir()`` reads it).
The executed notebook is kept as ``<runs_dir>/<batch>/<name>.ipynb`` (also when it fails:
papermill saves it with the failing cell marked), and the summary table as
``<runs_dir>/<batch>/summary.csv``.

Re-runs: a notebook whose inputs have not changed since its last successful run is not run
again (status ``ok``, ``reused`` true), provided its executed notebook and figures are still
there. Its inputs are the notebook file, the parameters it gets, the figure formats, the
``MRL_*`` environment variables, the ``mrl_analysis`` sources, and every file or folder that
a parameter value (given, or the notebook's default) names, relative to the batch root:
checkpoints, cache folders (their files' sizes and modification times). The record is
``<runs_dir>/<batch>/.<name>.inputs.json``, written when the batch ends, so that caches one
notebook adds for another do not invalidate the first. Data read through other routes (a
dataset found by its default location) is not tracked: pass ``force=True`` (``--force``) to
run everything.

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


def _reusable(entry: BatchEntry, fingerprint: str | None, batch: Batch) -> dict[str, Any] | None:
    """The recorded row of the last successful run, if its inputs and outputs are unchanged."""
    record = _record_path(entry, batch)
    if fingerprint is None or not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):  # a damaged record only costs a re-run
        return None
    row = saved.get("row", {})
    fig_dir = batch.figures_dir / batch.name / entry.name
    if (
        saved.get("fingerprint") != fingerprint
        or not Path(row.get("executed") or "").is_file()
        or not fig_dir.is_dir()
        or _count_figures(fig_dir) != row.get("figures")
    ):
        return None
    return row


def _write_record(entry: BatchEntry, fingerprint: str | None, row: Mapping, batch: Batch) -> None:
    record = _record_path(entry, batch)
    if fingerprint is None or row["status"] != "ok":
        record.unlink(missing_ok=True)
        return
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "row": dict(row)}, default=str))
    tmp.replace(record)


def _run_entry(
    entry: BatchEntry,
    parameters: dict[str, Any],
    batch: Batch,
    kernel_name: str,
) -> dict[str, Any]:
    from papermill import execute_notebook
    from papermill.exceptions import PapermillExecutionError

    executed = batch.runs_dir / batch.name / f"{entry.name}.ipynb"
    fig_dir = batch.figures_dir / batch.name / entry.name
    # Stale outputs from an earlier run would be miscounted and mistaken for this run's.
    shutil.rmtree(fig_dir, ignore_errors=True)
    fig_dir.mkdir(parents=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)
    _record_path(entry, batch).unlink(missing_ok=True)

    env = {"MRL_FIGURES_DIR": str(fig_dir)}
    if batch.figure_formats is not None:
        env["MRL_FIGURE_FORMATS"] = ",".join(batch.figure_formats)

    status, cell, error = "ok", None, ""
    start = time.perf_counter()
    try:
        with _environ(env):
            execute_notebook(
                str(entry.notebook),
                str(executed),
                parameters=parameters,
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=str(batch.root),
                # ipykernel >= 7 warns on every start that TCP is unencrypted (it is localhost)
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    except PapermillExecutionError as err:
        status, cell = "failed", _source_cell_index(executed, err.cell_index)
        where = f"cell {cell} (In [{err.exec_count}])"
        line = _failing_line(err.traceback)
        error = f"{where}{', ' + line if line else ''}: {err.ename}: {err.evalue}"
    except Exception as err:  # a kernel that dies or will not start fails only this entry
        status = "failed"
        first_line = next(iter(str(err).strip().splitlines()), "")
        error = f"{type(err).__name__}: {first_line}"
    return {
        "name": entry.name,
        "notebook": str(entry.notebook),
        "status": status,
        "seconds": round(time.perf_counter() - start, 2),
        "figures": _count_figures(fig_dir),
        "cell": cell,
        "error": error,
        "executed": str(executed) if executed.exists() else "",
        "figures_dir": str(fig_dir),
        "reused": False,
    }


def run_batch(
    batch: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    only: list[str] | None = None,
    runs_dir: str | os.PathLike | None = None,
    figures_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> pd.DataFrame:
    """Run a batch's notebooks headless; return the summary, one row per notebook run.

    ``batch``: a batch file or study spec (:mod:`mrl_analysis.app.batch`), a dict of a batch
    file's shape, or ``None`` for the demo study's batch.
    ``only``: entry names to run (the whole batch is still validated). ``runs_dir`` /
    ``figures_dir`` override the batch's (relative ones resolve against the batch root).
    Everything is validated before the first notebook starts; a failing notebook does not
    stop the others. Summary columns: ``name, notebook, status ("ok" | "failed"), seconds,
    figures`` (distinct figure names written), ``cell`` (index of the failing cell in the
    source notebook), ``error`` (cell, ``In [n]``, failing line, exception), ``executed`` (the
    executed notebook, kept also on failure), ``figures_dir``, ``reused`` (true: its inputs
    were unchanged since its last successful run, so it was not run again; ``force=True``
    runs every notebook). Also saved as ``<runs_dir>/<batch>/summary.csv``.
    """
    from tqdm.auto import tqdm

    spec = load_batch(batch)
    if runs_dir is not None:
        spec = replace(spec, runs_dir=spec.root / Path(runs_dir).expanduser())
    if figures_dir is not None:
        spec = replace(spec, figures_dir=spec.root / Path(figures_dir).expanduser())
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

    rows = []
    library = _library_digest()  # the sources do not change during a batch
    with tqdm(
        total=len(entries), desc=f"batch {spec.name}", unit="nb", disable=not progress
    ) as bar:
        for entry in entries:
            bar.set_postfix_str(entry.name)
            start = time.perf_counter()
            fingerprint = input_fingerprint(entry, parameters[entry.name], spec, library)
            row = None if force else _reusable(entry, fingerprint, spec)
            if row is None:
                row = _run_entry(entry, parameters[entry.name], spec, kernel)
            else:
                row = {**row, "seconds": round(time.perf_counter() - start, 2), "reused": True}
            rows.append(row)
            if progress:
                bar.write(_status_line(row))
            bar.update()
    # Recorded after the whole batch: a later notebook may add caches an earlier one names.
    for entry, row in zip(entries, rows, strict=True):
        if not row["reused"]:
            after = input_fingerprint(entry, parameters[entry.name], spec, library)
            _write_record(entry, after, row, spec)

    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"cell": "Int64"})
    (spec.runs_dir / spec.name).mkdir(parents=True, exist_ok=True)
    summary.to_csv(spec.runs_dir / spec.name / "summary.csv", index=False)
    return summary


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
