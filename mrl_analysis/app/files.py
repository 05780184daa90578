"""Files the application reads and writes: YAML with one-line errors, printable names, and
the rule that nothing is written outside the folder a batch belongs to.

* :func:`read_yaml` parses a YAML file; a syntax error becomes one ``ValueError`` line naming
  the file, line and column and what the parser expected.
* :func:`shown` prints any path, including names that are not valid UTF-8 (bytes the file
  system allows): they appear as ``\\udcXX`` escapes instead of crashing the message.
* :func:`check_inside` refuses a folder outside a root unless the user allowed it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def shown(path: str | bytes | os.PathLike) -> str:
    """``path`` as printable text: undecodable bytes become ``\\udcXX`` escapes, not errors."""
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes cannot be printed as they are
        return ascii(text)[1:-1]
    return text


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document in ``path``; a syntax error is one line: file, line, column, what."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{shown(path)}: not a UTF-8 text file (byte {err.start}); save it as UTF-8 YAML"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{shown(path)}:{mark.line + 1}:{mark.column + 1}" if mark else shown(path)
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        raise ValueError(
            f"{where}: invalid YAML: {what}{f' ({context})' if context else ''}; "
            "check the indentation, colons and brackets on that line"
        ) from None


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies at or under ``root``, comparing the paths as written with
    ``..`` collapsed (a symlink the user placed in the project is the user's choice)."""
    resolved = Path(os.path.normpath(Path(root) / path))
    return resolved.is_relative_to(os.path.normpath(root))


def check_inside(
    path: str | os.PathLike, root: str | os.PathLike, what: str, *, allow_outside: bool
) -> Path:
    """``root / path`` (``..`` collapsed); a ``ValueError`` if it lies outside ``root`` and
    the user did not pass ``allow_outside``."""
    resolved = Path(os.path.normpath(Path(root) / Path(path).expanduser()))
    if not allow_outside and not is_inside(resolved, root):
        raise ValueError(
            f"{what} {shown(resolved)} is outside the batch root {shown(root)}; the runner "
            "replaces folders there. Choose a folder inside it, or pass --allow-outside "
            "(allow_outside=True) to write there on purpose"
        )
    return resolved
