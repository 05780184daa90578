"""Progress reporting, one helper for every layer: live bars for a person, clean saved notebooks.

Library code never imports tqdm itself; it calls :func:`progress` (a drop-in for
``tqdm.auto.tqdm``) and names what runs *and for which model* in ``desc``::

    from mrl_analysis.core.progress import progress, progress_write

    for start in progress(starts, desc=f"5-NN · {model}", unit="batch"):
        ...
    with progress(total=n_images, desc=f"embed · {model}", unit="img", leave=True) as bar:
        bar.update(len(batch))
    progress_write(f"{model} epoch 2/4: val top-1 0.871")  # a log line that never breaks a bar

``progress(iterable=None, *, desc, total=None, unit="it", leave=False, disable=False, **kw)``
returns a tqdm object (iterate it, or use ``update``/``set_postfix_str`` in a ``with``);
``kw`` goes to tqdm unchanged. ``desc`` is required: a bar that does not say what it counts,
and for which model, is no use in a notebook that runs five models.

What a finished loop leaves behind is the same everywhere: ``leave=True`` leaves one plain
line, ``"embed · MRL: 10000/10000 img in 00:12"``; ``leave=False`` (inner, repeated loops)
leaves nothing. While it runs, the mode decides what is shown. The mode is the environment
variable ``MRL_PROGRESS`` (:data:`PROGRESS_ENV`):

``bar`` (default)
    ``tqdm.auto``: a widget in JupyterLab, a text bar in a terminal. In a Jupyter kernel the
    widget is shown through a display handle and replaced by the line above (or by nothing)
    when the loop ends, so a notebook executed by plain ``papermill`` saves no stale
    ``0%| 0/18`` bars.
``log``
    No bar; only the finished-loop lines (stdout in a kernel, stderr elsewhere). The batch
    runner sets this for every notebook it executes.
``off``
    Nothing at all, not even :func:`progress_write` lines.

Any other value raises ``ValueError`` naming the variable and the allowed values.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

from tqdm.std import tqdm as std_tqdm

#: The environment variable that selects the mode.
PROGRESS_ENV = "MRL_PROGRESS"
#: The allowed values of ``$MRL_PROGRESS``; the first is the default.
PROGRESS_MODES = ("bar", "log", "off")

ProgressMode = Literal["bar", "log", "off"]


def progress_mode() -> ProgressMode:
    """The mode ``$MRL_PROGRESS`` selects (``"bar"`` when unset or empty)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower() or "bar"
    if value not in PROGRESS_MODES:
        raise ValueError(
            f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r} is not a progress mode: "
            f"use one of {', '.join(PROGRESS_MODES)} (or leave it unset for bars)"
        )
    return value  # type: ignore[return-value]


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (the test tqdm.autonotebook uses too)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def _log_file() -> TextIO:
    # In a kernel, stderr is drawn as a red warning block; a finished loop is no warning.
    return sys.stdout if _in_kernel() else sys.stderr


def _finished_line(bar: std_tqdm) -> str:
    """``"<desc>: <n>/<total> <unit> in <elapsed>"``, or ``stopped at`` for a cut-short loop."""
    fmt = bar.format_dict
    count = f"{bar.n}/{bar.total}" if bar.total else f"{bar.n}"
    verb = "stopped at" if bar.total and bar.n < bar.total else ""
    elapsed = std_tqdm.format_interval(fmt["elapsed"])
    return f"{bar.desc}: {verb + ' ' if verb else ''}{count} {bar.unit} in {elapsed}"


class _Sink:
    """A file that drops what it is given: the log mode's bars are counted, never drawn."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class _LogBar(std_tqdm):
    """Counts like tqdm, draws nothing, writes one line when a ``leave=True`` loop ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file"] = _Sink()
        kwargs["mininterval"] = 3600.0  # nothing is drawn: don't spend time formatting
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        if self.disable:
            return
        line = _finished_line(self)
        leave = self.leave
        super().close()
        if leave:
            print(line, file=_log_file(), flush=True)


@functools.cache
def _bar_class() -> type[std_tqdm]:
    """tqdm.auto's class, with its notebook widget wrapped in a replaceable display."""
    from tqdm.auto import tqdm as auto_tqdm

    if not _in_kernel():
        return auto_tqdm
    from tqdm.notebook import tqdm_notebook

    if not issubclass(auto_tqdm, tqdm_notebook):  # no ipywidgets: tqdm fell back to text
        return auto_tqdm

    class _KernelBar(auto_tqdm):  # type: ignore[misc, valid-type]
        """The notebook widget, shown through a display handle that the end of the loop
        overwrites: papermill (nbclient) applies the overwrite to the saved output too."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            from IPython.display import display

            kwargs["display"] = False
            kwargs["delay"] = 0
            super().__init__(*args, **kwargs)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            if self.disable:
                return
            line = _finished_line(self)
            leave = self.leave
            super().close()
            if self._handle is not None:
                self._handle.update({"text/plain": line if leave else ""}, raw=True)
                self._handle = None

    return _KernelBar


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    leave: bool = False,
    disable: bool = False,
    **kwargs: Any,
) -> std_tqdm:
    """A progress bar over ``iterable`` (or a manual one with ``total``), drawn as
    ``$MRL_PROGRESS`` says (module docstring). ``desc`` names the work and the model."""
    mode = progress_mode()
    if mode == "off":
        disable = True
    cls = _LogBar if mode == "log" else _bar_class()
    return cls(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable, **kwargs)


def progress_write(message: str) -> None:
    """Print a log line without breaking a running bar (``tqdm.write``); nothing when off."""
    mode = progress_mode()
    if mode == "off":
        return
    if mode == "log":
        print(message, file=_log_file(), flush=True)
    else:
        from tqdm.auto import tqdm as auto_tqdm

        auto_tqdm.write(message)
