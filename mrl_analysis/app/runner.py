"""Headless batch runs of the analysis notebooks with papermill.

A batch file (YAML) lists notebooks × parameter sets::

    name: demo                      # batch name (default: the file's stem)
    root: ..                        # optional; see "Paths" below
    figure_formats: [html, png]     # optional; passed to the kernel as MRL_FIGURE_FORMATS
    runs_dir: runs                  # optional; executed notebooks go to <runs_dir>/<batch>/
    figures_dir: figures            # optional; figures go to <figures_dir>/<batch>/<name>/
    defaults:                       # parameters shared by all entries
      dataset: fashion-mnist
    notebooks:
      - name: accuracy-mrl          # unique within the batch; default: the notebook's stem
        path: notebooks/01_per_dimension_accuracy.ipynb
        parameters: {model: data/checkpoints/fashion-mnist/mrl.pt}
      - name: accuracy-ff           # the same notebook again, with other parameters
        path: notebooks/01_per_dimension_accuracy.ipynb
        parameters: {model: data/checkpoints/fashion-mnist/ff.pt}
      - notebooks/02_other.ipynb    # shorthand: a bare path, no own parameters

Parameters are checked against each notebook's cell tagged ``parameters`` (read with
``papermill.inspect_notebook``) before anything runs: an entry's own parameters must all be
declared by its notebook; a default goes only to the notebooks that declare it and must be
declared by at least one. ``output_dir`` belongs to the runner: it is set to the entry's
figure folder in every notebook that declares it.

Paths: relative notebook paths, ``runs_dir`` and ``figures_dir`` resolve against the batch's
root, and notebooks run with the root as working directory so that their relative data paths
work. The root is ``root:`` when given (relative to the batch file's folder, or to the
current directory for a batch given as a dict); otherwise, for a batch file, the nearest
folder at or above it holding a ``pyproject.toml`` (the project the file belongs to); and
otherwise — the packaged default batch, a dict, a file outside any project — the current
directory.

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
import difflib
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import yaml

from mrl_analysis.figures.save import STATIC_FORMATS

DEFAULT_BATCH = Path(__file__).parent / "studies" / "demo.yaml"
KERNEL_NAME = "mrl-analysis"
FIGURE_FORMATS = ("html", *STATIC_FORMATS)
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

_BATCH_KEYS = ("name", "root", "figure_formats", "runs_dir", "figures_dir", "defaults", "notebooks")
_ENTRY_KEYS = ("name", "path", "parameters")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class BatchEntry:
    """One notebook run: ``parameters`` are the entry's own (defaults not merged in)."""

    name: str
    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A parsed batch; every path is absolute."""

    name: str
    root: Path
    entries: list[BatchEntry]
    runs_dir: Path
    figures_dir: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    figure_formats: tuple[str, ...] | None = None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_keys(found: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in found:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r}{_did_you_mean(str(key), list(allowed))}; "
                f"allowed keys: {', '.join(allowed)}"
            )


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."}:
        raise ValueError(
            f"{where}: name {name!r} must be a plain file name (letters, digits, '_', '-', '.'), "
            "since it names the output folder and notebook"
        )
    return name


def _project_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def load_batch(batch: str | os.PathLike | Mapping[str, Any] | None = None) -> Batch:
    """Parse a batch file (or an already-loaded dict; ``None``: the packaged demo batch).

    Checks the batch's shape (keys, names, formats, notebook files); the notebooks'
    parameters are checked by :func:`check_batch`.
    """
    if batch is None:
        spec, where, base, root = _read_yaml(DEFAULT_BATCH), str(DEFAULT_BATCH), Path.cwd(), None
        default_name = "demo"
    elif isinstance(batch, Mapping):
        spec, where, base, root, default_name = dict(batch), "batch", Path.cwd(), None, None
    else:
        path = Path(batch).expanduser().absolute()
        if not path.is_file():
            raise FileNotFoundError(f"batch file not found: {path}")
        spec, where, base = _read_yaml(path), str(path), path.parent
        root, default_name = _project_root(path.parent), path.stem

    _check_keys(spec, _BATCH_KEYS, where)
    name = _check_name(spec.get("name", default_name), f"{where}: batch")
    if spec.get("root") is not None:
        root = (base / Path(spec["root"]).expanduser()).absolute()
    root = root or Path.cwd().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: batch root {root} is not a folder")

    formats = spec.get("figure_formats")
    if formats is not None:
        if isinstance(formats, str):
            formats = [formats]
        formats = tuple(str(f).lower() for f in formats)
        for fmt in formats:
            if fmt not in FIGURE_FORMATS:
                raise ValueError(
                    f"{where}: unknown figure format {fmt!r}; "
                    f"use some of {', '.join(FIGURE_FORMATS)}"
                )

    defaults = spec.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ValueError(f"{where}: 'defaults' must be a mapping of parameter names to values")

    raw_entries = spec.get("notebooks")
    if not raw_entries or not isinstance(raw_entries, list):
        raise ValueError(
            f"{where}: 'notebooks' must be a non-empty list of {{name, path, parameters}}"
        )
    entries: list[BatchEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_entries):
        at = f"{where}: notebooks[{i}]"
        if isinstance(raw, str):
            raw = {"path": raw}
        if not isinstance(raw, Mapping) or "path" not in raw:
            raise ValueError(f"{at}: give a notebook path, or a mapping with at least 'path'")
        _check_keys(raw, _ENTRY_KEYS, at)
        nb_path = Path(raw["path"]).expanduser()
        nb_path = nb_path if nb_path.is_absolute() else root / nb_path
        if not nb_path.is_file():
            raise FileNotFoundError(
                f"{at}: notebook not found: {nb_path} (relative notebook paths resolve against "
                f"the batch root {root}; run from the repository root or set 'root:' in the batch)"
            )
        entry_name = _check_name(raw.get("name", nb_path.stem), at)
        if entry_name in seen:
            raise ValueError(
                f"{at}: duplicate name {entry_name!r}; "
                "give each run of the same notebook its own name"
            )
        seen.add(entry_name)
        params = raw.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"{at}: 'parameters' must be a mapping of parameter names to values")
        entries.append(BatchEntry(entry_name, nb_path, dict(params)))

    return Batch(
        name=name,
        root=root,
        entries=entries,
        defaults=dict(defaults),
        figure_formats=formats,
        runs_dir=root / spec.get("runs_dir", "runs"),
        figures_dir=root / spec.get("figures_dir", "figures"),
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    with open(path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a batch file must be a YAML mapping with a 'notebooks' list")
    return spec


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its cell tagged ``parameters``.

    Maps name → ``{name, inferred_type_name, default, help}`` (papermill's inspection).
    """
    import nbformat
    import papermill

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"notebook {path} has no cell tagged 'parameters'")
    try:
        return papermill.inspect_notebook(str(path))
    except ValueError as err:
        raise ValueError(
            f"cannot read the parameters of {path}: {err} (save it from Jupyter with a Python "
            "kernel so its metadata names the language)"
        ) from err


def check_batch(batch: Batch) -> dict[str, dict[str, Any]]:
    """Validate every entry's parameters; return entry name → the parameters it will get.

    Raises one ``ValueError`` listing every problem, naming the notebooks' real parameters.
    """
    problems: list[str] = []
    declared: dict[str, dict[str, Any]] = {}
    for entry in batch.entries:
        try:
            declared[entry.name] = notebook_parameters(entry.notebook)
        except ValueError as err:
            problems.append(f"{entry.name}: {err}")

    for key in batch.defaults:
        if key == "output_dir":
            problems.append(
                "defaults: 'output_dir' is set by the runner (to <figures_dir>/<batch>/<name>); "
                "set 'figures_dir' in the batch instead"
            )
        elif declared and not any(key in params for params in declared.values()):
            every = sorted({p for params in declared.values() for p in params})
            problems.append(
                f"defaults: {key!r} is not a parameter of any notebook in the batch"
                f"{_did_you_mean(key, every)}; their parameters are: {', '.join(every) or 'none'}"
            )

    resolved: dict[str, dict[str, Any]] = {}
    for entry in batch.entries:
        if entry.name not in declared:
            continue
        params = declared[entry.name]
        real = ", ".join(params) or "none"
        for key in entry.parameters:
            if key == "output_dir":
                problems.append(
                    f"{entry.name} ({entry.notebook.name}): 'output_dir' is set by the runner; "
                    "set 'figures_dir' in the batch instead"
                )
            elif key not in params:
                problems.append(
                    f"{entry.name} ({entry.notebook.name}): unknown parameter {key!r}"
                    f"{_did_you_mean(key, list(params))}; the notebook's parameters are: {real}"
                )
        merged = {k: v for k, v in batch.defaults.items() if k in params}
        merged.update(entry.parameters)
        if "output_dir" in params:
            merged["output_dir"] = str(batch.figures_dir / batch.name / entry.name)
        resolved[entry.name] = merged

    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"batch {batch.name!r}: nothing was run, fix these first:\n{listed}")
    return resolved


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
                f"no Jupyter kernel named {kernel_name!r}{_did_you_mean(kernel_name, available)}; "
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

    ``batch``: a YAML file, a dict of the same shape, or ``None`` for the packaged demo batch.
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
                    f"{_did_you_mean(wanted, names)}; its names are: {', '.join(names)}"
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
