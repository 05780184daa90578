"""Batch files: which notebooks run with which parameters, parsed and checked before a run.

A batch file (YAML) lists notebooks × parameter sets::

    name: demo                      # batch name (default: the file's stem)
    root: ..                        # optional; see "Paths" below
    study: demo                     # optional; see "Studies" below
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

Studies: ``study:`` names a study (:mod:`mrl_analysis.app.studies`; a packaged study's name
or a spec file, relative to the batch file's folder), whose parameters (``study``,
``dataset``, ``data_root``, ``models``, ``novel_models``, ``cache_root``, ``eval_split``)
then go to every notebook that declares them, under the batch's ``defaults``. A study spec
itself (e.g. ``mrl_analysis/app/studies/demo.yaml``) is accepted as a batch file too: its
``batch`` section, with ``study:`` that study.

Parameters are checked against each notebook's cell tagged ``parameters`` (read with
``papermill.inspect_notebook``) before anything runs: an entry's own parameters must all be
declared by its notebook; a default goes only to the notebooks that declare it and must be
declared by at least one (a study's parameters need not be). ``output_dir`` belongs to the
runner: it is set to the entry's figure folder in every notebook that declares it.

Types: each parameter's expected type comes from its default in the notebook's parameters
cell (a JSON Schema per notebook, :func:`parameter_schema`): ``knn_k = [1, 5]`` takes a list of
integers, ``tolerance = 0.01`` a number, ``models = None`` (a study parameter) a mapping of
display name → checkpoint. ``None`` is accepted where the default is ``None`` or the
parameter's comment mentions ``None``. Path-like values — the checkpoints under ``models`` /
``novel_models``, ``data_root``, and any text ending in a file suffix such as ``.pt`` or
``.json`` — must exist (relative ones under the batch root). Every problem of every entry is
reported at once, before the first notebook runs.

Paths: relative notebook paths, ``runs_dir`` and ``figures_dir`` resolve against the batch's
root, and notebooks run with the root as working directory so that their relative data paths
work. The root is ``root:`` when given (relative to the batch file's folder, or to the
current directory for a batch given as a dict); otherwise, for a batch file, the nearest
folder at or above it holding a ``pyproject.toml`` (the project the file belongs to); and
otherwise — a dict, a file outside any project — the current directory. A study's batch
has the study's root (see :mod:`mrl_analysis.app.studies`).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrl_analysis.app.files import read_yaml, shown
from mrl_analysis.app.studies import DEFAULT_STUDY, Study, load_study
from mrl_analysis.core.paths import project_root
from mrl_analysis.figures.save import STATIC_FORMATS

FIGURE_FORMATS = ("html", *STATIC_FORMATS)
_BATCH_KEYS = (
    "name",
    "root",
    "study",
    "figure_formats",
    "runs_dir",
    "figures_dir",
    "defaults",
    "notebooks",
)
_ENTRY_KEYS = ("name", "path", "parameters")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    study: str | None = None
    #: The study's parameters: for the notebooks declaring them, under ``defaults``.
    study_parameters: dict[str, Any] = field(default_factory=dict)


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the choices close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_keys(found: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in found:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), list(allowed))}; "
                f"allowed keys: {', '.join(allowed)}"
            )


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."}:
        raise ValueError(
            f"{where}: name {name!r} must be a plain file name (letters, digits, '_', '-', '.'), "
            "since it names the output folder and notebook"
        )
    return name


def _read_yaml(path: Path) -> dict[str, Any]:
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ValueError(
            f"{shown(path)}: a batch file must be a YAML mapping with a 'notebooks' list"
        )
    return spec


def _is_study(spec: Mapping[str, Any]) -> bool:
    return "batch" in spec and "notebooks" not in spec


def _check_formats(formats: Any, where: str) -> tuple[str, ...] | None:
    if formats is None:
        return None
    if isinstance(formats, str):
        formats = [formats]
    formats = tuple(str(f).lower() for f in formats)
    for fmt in formats:
        if fmt not in FIGURE_FORMATS:
            raise ValueError(
                f"{where}: unknown figure format {fmt!r}; use some of {', '.join(FIGURE_FORMATS)}"
            )
    return formats


def _folder(spec: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a folder name, got {value!r}")
    return value


def _entries(raw_entries: Any, root: Path, where: str) -> list[BatchEntry]:
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
    return entries


def load_batch(batch: str | os.PathLike | Mapping[str, Any] | None = None) -> Batch:
    """Parse a batch file or study spec (or an already-loaded dict; ``None``: the demo study).

    Checks the batch's shape (keys, names, formats, notebook files); the notebooks'
    parameters are checked by :func:`check_batch`.
    """
    if batch is None:
        batch = load_study(DEFAULT_STUDY).batch_spec()
    if isinstance(batch, Mapping):
        spec, where, base, root, default_name = dict(batch), "batch", Path.cwd(), None, None
    else:
        path = Path(batch).expanduser().absolute()
        if not path.is_file():
            raise FileNotFoundError(f"batch file not found: {shown(path)}")
        spec, where, base = _read_yaml(path), shown(path), path.parent
        root, default_name = project_root(path.parent), path.stem
        if _is_study(spec):
            spec, base, root = load_study(path).batch_spec(), Path.cwd(), None

    _check_keys(spec, _BATCH_KEYS, where)
    name = _check_name(spec.get("name", default_name), f"{where}: batch")
    if spec.get("root") is not None:
        root = (base / Path(spec["root"]).expanduser()).absolute()
    root = root or Path.cwd().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: batch root {root} is not a folder")

    defaults = spec.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ValueError(f"{where}: 'defaults' must be a mapping of parameter names to values")
    study: Study | None = None
    if spec.get("study") is not None:
        ref = str(spec["study"])
        if ref.endswith((".yaml", ".yml")):
            ref = str(base / Path(ref).expanduser())
        study = load_study(ref)
    return Batch(
        name=name,
        root=root,
        entries=_entries(spec.get("notebooks"), root, where),
        defaults=dict(defaults),
        figure_formats=_check_formats(spec.get("figure_formats"), where),
        runs_dir=root / _folder(spec, "runs_dir", "runs", where),
        figures_dir=root / _folder(spec, "figures_dir", "figures", where),
        study=None if study is None else study.ref,
        study_parameters={} if study is None else study.parameters(relative_to=root),
    )


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


_OUTPUT_DIR_HINT = "'output_dir' is set by the runner; set 'figures_dir' in the batch instead"

_PATHS = {"type": "object", "additionalProperties": {"type": "string"}}
#: Schemas of the study parameters, whose notebook default is ``None`` (the study fills them).
STUDY_PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "study": {"type": "string"},
    "dataset": {"type": "string"},
    "models": _PATHS,
    "novel_models": _PATHS,
    "cache_root": {"type": "string"},
    "data_root": {"type": "string"},
    "eval_split": {"type": "string"},
    "split": {"type": "string"},
}
#: Parameters whose (mapping of) values name checkpoints or folders that must exist.
_PATH_PARAMETERS = ("models", "novel_models", "data_root")
#: Text values ending in one of these name a file that must exist.
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".json", ".yaml", ".yml", ".csv")
_FILE_SUFFIXES += (".npy", ".npz", ".txt")


def _value_schema(value: Any) -> dict[str, Any]:
    """The JSON Schema of values like ``value`` (a parameter's default)."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list | tuple):
        schema: dict[str, Any] = {"type": "array"}
        items = _any_of([_value_schema(v) for v in value])
        if items:
            schema["items"] = items
        return schema
    if isinstance(value, Mapping):
        return {"type": "object"}
    return {}


def _any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    unique = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
    if not unique or {} in unique:
        return {}
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def parameter_schema(declared: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A JSON Schema for a notebook's parameters, from its parameters cell.

    ``declared`` is :func:`notebook_parameters`' answer. A literal default gives the type
    (lists: of their elements' types); a ``None`` default gives the study parameters' known
    types (:data:`STUDY_PARAMETER_SCHEMAS`) and anything for the others; an expression
    default, anything. ``None`` stays allowed where the default is ``None`` or the
    parameter's comment mentions it (``# None: the study's``).
    """
    properties: dict[str, Any] = {}
    for name, spec in declared.items():
        try:
            default = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError, TypeError):  # an expression: any value
            properties[name] = {}
            continue
        schema = STUDY_PARAMETER_SCHEMAS.get(name, {}) if default is None else None
        schema = _value_schema(default) if schema is None else schema
        if schema and (default is None or "None" in (spec.get("help") or "")):
            schema = _any_of([schema, {"type": "null"}])
        properties[name] = schema
    return {"type": "object", "properties": properties}


_WORDS = {
    "null": ("null", "nulls"),
    "boolean": ("true or false", "booleans"),
    "integer": ("an integer", "integers"),
    "number": ("a number", "numbers"),
    "string": ("text", "strings"),
    "array": ("a list", "lists"),
    "object": ("a mapping", "mappings"),
}


def describe_schema(schema: Mapping[str, Any], plural: bool = False) -> str:
    """``schema`` in words: ``"a list of integers"``, ``"text or null"``."""
    if "anyOf" in schema:
        return " or ".join(describe_schema(s, plural) for s in schema["anyOf"])
    kind = str(schema.get("type"))
    if kind not in _WORDS:
        return "values" if plural else "any value"
    word = _WORDS[kind][plural]
    if kind == "array" and schema.get("items"):
        return f"{word} of {describe_schema(schema['items'], plural=True)}"
    if kind == "object" and schema.get("additionalProperties"):
        return f"{word} of names to paths"
    return word


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    # JSON Schema counts 5.0 as an integer; a notebook doing range(5.0) does not.
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return extend(Draft202012Validator, type_checker=checker)(schema)


def type_problems(
    params: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """One line per parameter in ``params`` whose value does not fit the notebook's schema."""
    schema = parameter_schema(declared)
    problems: dict[str, str] = {}
    for error in _validator(schema).iter_errors(dict(params)):
        if not error.absolute_path:
            continue
        name = str(error.absolute_path[0])
        if name in problems:
            continue
        expected = describe_schema(schema["properties"].get(name, {}))
        problems[name] = (
            f"{name} = {params[name]!r} should be {expected} "
            f"(the notebook's default: {declared[name]['default']})"
        )
    return list(problems.values())


def _path_values(name: str, value: Any) -> list[tuple[str, str]]:
    """``(label, path)`` of every value of parameter ``name`` that names a file or folder."""
    if name in _PATH_PARAMETERS and isinstance(value, Mapping):
        return [(f"{name}[{k!r}]", str(v)) for k, v in value.items() if isinstance(v, str)]
    if name in _PATH_PARAMETERS and isinstance(value, str):
        return [(name, value)]
    if isinstance(value, str) and value.lower().endswith(_FILE_SUFFIXES):
        return [(name, value)]
    if isinstance(value, list):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)
                and v.lower().endswith(_FILE_SUFFIXES)]  # fmt: skip
    return []


def missing_paths(params: Mapping[str, Any], root: Path) -> list[str]:
    """One line per path-like parameter value (module docstring) that does not exist."""
    problems = []
    for name, value in params.items():
        for label, text in _path_values(name, value):
            path = Path(os.path.normpath(root / Path(text).expanduser()))
            if not path.exists():
                problems.append(f"{label}: {shown(path)} does not exist")
    return problems


def check_batch(batch: Batch, *, check_paths: bool = True) -> dict[str, dict[str, Any]]:
    """Validate every entry's parameters; return entry name → the parameters it will get.

    Raises one ``ValueError`` listing every problem (unknown names, with the notebooks' real
    parameters; wrong types; with ``check_paths``, missing files), one line each.
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
                f"{did_you_mean(key, every)}; their parameters are: {', '.join(every) or 'none'}"
            )

    resolved: dict[str, dict[str, Any]] = {}
    for entry in batch.entries:
        if entry.name not in declared:
            continue
        params = declared[entry.name]
        real = ", ".join(params) or "none"
        where = f"{entry.name} ({entry.notebook.name})"
        for key in entry.parameters:
            if key == "output_dir":
                problems.append(f"{where}: {_OUTPUT_DIR_HINT}")
            elif key not in params:
                problems.append(
                    f"{where}: unknown parameter {key!r}{did_you_mean(key, list(params))}; "
                    f"the notebook's parameters are: {real}"
                )
        merged = {k: v for k, v in batch.study_parameters.items() if k in params}
        merged.update((k, v) for k, v in batch.defaults.items() if k in params)
        merged.update(entry.parameters)
        problems.extend(f"{where}: {p}" for p in type_problems(merged, params))
        if check_paths:
            problems.extend(f"{where}: {p}" for p in missing_paths(merged, batch.root))
        if "output_dir" in params:
            merged["output_dir"] = str(batch.figures_dir / batch.name / entry.name)
        resolved[entry.name] = merged

    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"batch {batch.name!r}: nothing was run, fix these first:\n{listed}")
    return resolved
