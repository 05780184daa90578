"""Save and load Matryoshka checkpoints: our own format and the authors' released files.

Our format is a ``torch.save`` dict that loads with ``weights_only=True``::

    {"format": "mrl-analysis/1", "config": {...build_model kwargs...},
     "state_dict": {...}, "class_names": [...], "meta": {...}, "train_state": {...}}

plus ``"weights_sha256"``, or, for a path ending in ``.safetensors``, the tensors of
``state_dict`` with ``format``, ``config``, ``class_names``, ``meta`` and
``weights_sha256`` as strings in the safetensors metadata header (no ``train_state``).

What loading checks, so that a bad file fails with one line naming it and the fix:

* nothing but tensors and plain containers is unpickled (``weights_only=True``); a file
  asking for any other Python object is refused before anything runs;
* ``weights_sha256`` (:func:`weights_sha256`, written at save time) must match the
  weights read, so a flipped byte on disk or in a copy is noticed;
* every floating-point weight must be finite, in our files and in the authors' (which
  carry no digest); the error names the tensors holding NaN / inf;
* empty, truncated, garbled and non-checkpoint files, and format dicts missing their
  ``state_dict`` or ``config``, are reported as such.

Every save goes to a temporary file first and is renamed over the target with
``os.replace``, so an interrupted save never leaves a broken file; the temporary files of
writes that were killed are removed by a later save into the same folder.

:func:`load_model` also reads the authors' ImageNet ResNet50 checkpoints
(``r50_mrl1_e0_ff2048.pt`` and friends); their layouts are read in
:mod:`mrl_analysis.models.official`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import re
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import safetensors
import safetensors.torch
import torch

from mrl_analysis.core.checks import check_int, check_nesting
from mrl_analysis.core.kinds import HeadKind, check_kind
from mrl_analysis.models.network import MatryoshkaModel, build_model
from mrl_analysis.models.official import (
    MAX_LISTED,
    apply_blurpool,
    from_official,
    head_indices,
    imagenet_class_names,
    official_meta,
    official_transform,
)

FORMAT = "mrl-analysis/1"
#: A temporary file younger than this is never removed: its writer may not hold its lock yet.
TEMP_GRACE_SECONDS = 60.0
_TEMP_NAME = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.tmp")
#: How many characters of a parser's own error message an error repeats.
_DETAIL = 160


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 of a state_dict: every entry's name, dtype, shape and bytes, in name order.

    The same weights give the same digest whatever the device, file format or key order.
    """
    digest = hashlib.sha256()
    for name, value in sorted(state_dict.items()):
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|{value!r}\n".encode())
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    path: str | Path,
    model: MatryoshkaModel,
    *,
    class_names: list[str] | None = None,
    meta: dict | None = None,
    train_state: dict | None = None,
) -> Path:
    """Write ``model`` to ``path`` in our format, atomically; returns the path.

    ``class_names`` and ``meta`` default to the model's own (so a loaded model re-saves
    as it was). A path ending in ``.safetensors`` stores the tensors there and
    config / class names / meta as JSON in the header; ``train_state`` (optimizer,
    scheduler, epoch, ...) needs a ``.pt`` file. Everything must load with
    ``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples, dicts;
    anything else (e.g. numpy scalars) is refused with a ValueError and an existing file
    at ``path`` is left untouched.
    """
    path = Path(path)
    if not isinstance(model, MatryoshkaModel):
        raise ValueError(
            f"save_checkpoint expects a MatryoshkaModel (from build_model / load_model), "
            f"got {type(model).__name__}"
        )
    class_names = list(model.class_names or []) if class_names is None else list(class_names)
    if class_names and len(class_names) != model.num_classes:
        raise ValueError(
            f"{len(class_names)} class_names given for a model with {model.num_classes} classes"
        )
    config = {**model.config, "nesting": list(model.nesting)}
    meta = dict(model.meta if meta is None else meta)
    path.parent.mkdir(parents=True, exist_ok=True)

    if path.suffix == ".safetensors":
        if train_state is not None:
            raise ValueError(
                "train_state cannot be stored in a .safetensors file (tensors only): "
                "save training checkpoints to a .pt path"
            )
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        header = {"format": FORMAT, "config": config, "class_names": class_names, "meta": meta}
        try:
            metadata = {k: v if k == "format" else json.dumps(v) for k, v in header.items()}
            metadata["weights_sha256"] = weights_sha256(tensors)
        except TypeError as err:
            raise ValueError(
                f"cannot write {path}: config, class_names and meta must be JSON-serialisable "
                f"for .safetensors ({err}); convert values with float()/int()/str()/.tolist()"
            ) from err
        _write_atomically(path, lambda f: f.write(safetensors.torch.save(tensors, metadata)))
        return path

    state = model.state_dict()
    payload = {
        "format": FORMAT,
        "config": config,
        "state_dict": state,
        "class_names": class_names,
        "meta": meta,
        "weights_sha256": weights_sha256(state),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    _write_atomically(path, lambda f: torch.save(payload, f), check=_check_weights_only)
    return path


def _write_atomically(
    path: Path, write: Callable[[IO[bytes]], Any], check: Callable[[Path], None] | None = None
) -> None:
    # A unique sibling name keeps the rename on one filesystem (atomic), and open("xb")
    # gives the file the usual umask permissions, unlike tempfile's 0600.
    remove_stale_temps(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            # Held until the rename: remove_stale_temps leaves a locked file alone, and the
            # kernel releases the lock when a killed writer dies.
            fcntl.flock(f, fcntl.LOCK_EX)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if check is not None:
                check(tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed checkpoint writes left in ``folder``.

    Only names :func:`save_checkpoint` writes (``.<name>.<pid>.<8 hex>.tmp``), only plain
    files older than :data:`TEMP_GRACE_SECONDS`, and only when no process holds their
    lock (a live writer does, from creation to rename). Returns the removed paths; every
    save calls it for its own folder.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < TEMP_GRACE_SECONDS:
                continue
            with open(entry.path, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a writer is alive
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # vanished or not ours to remove: leave it
    return removed


def _check_weights_only(tmp: Path) -> None:
    # mmap: unpickles the object tree (what weights_only vets) without reading tensor data.
    try:
        torch.load(tmp, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(
            "refusing to save a checkpoint that torch.load(weights_only=True) cannot read "
            f"(it holds {_refused_object(err) or 'an unsupported object'}); keep meta and "
            "train_state to tensors, numbers, strings, lists, tuples and dicts "
            "(e.g. float(x), x.tolist())"
        ) from err


# How torch's weights_only unpickler words a refused object (torch 2.4 to 2.14 at least).
_REFUSALS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
    re.compile(r"reduce for unrecognized function (.+?)(?: which belongs|$)", re.MULTILINE),
    re.compile(r"Can only create new object for .* but got (.+?)$", re.MULTILINE),
)


def _refused_object(err: pickle.UnpicklingError) -> str | None:
    """The Python object a weights_only load refused, if that is why it failed."""
    for pattern in _REFUSALS:
        match = pattern.search(str(err))
        if match:
            return match.group(1).rstrip(".")
    return None


# --------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """The raw contents of a checkpoint file, with tensors on ``map_location``.

    Our ``.pt`` files give the format dict; our ``.safetensors`` files give the same dict
    (without ``train_state``); any other file gives its plain ``state_dict``
    (e.g. the authors' checkpoints). Everything listed in the module docstring is checked
    first: a file that fails gives a ValueError naming it, what is wrong and the fix.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"checkpoint {what}: {path}")
    layout = "safetensors" if path.suffix == ".safetensors" else _sniff(path)
    if layout == "safetensors":
        raw = _load_safetensors(path, map_location)
    else:
        raw = _torch_load(path, map_location)
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} holds a {type(raw).__name__}, not a checkpoint dict. Fix: save the "
            "model's state_dict(), or use mrl_analysis.save_checkpoint"
        )
    _check_contents(raw, path)
    return raw


def _sniff(path: Path) -> str:
    """``"zip"``, ``"pickle"`` (torch's legacy format) or ``"safetensors"``, from the first
    bytes; a ValueError for anything else."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if not head:
        what = "the file is empty (0 bytes), e.g. an interrupted download or copy"
    else:
        try:
            text = head.decode("utf-8")
            what = f"it is a text file starting {text.splitlines()[0][:40]!r}"
        except UnicodeDecodeError:
            what = f"its first bytes {head[:8]!r} are no checkpoint format torch writes"
    raise ValueError(
        f"cannot load checkpoint {path}: {what}. Fix: pass a .pt / .pth file written by "
        "torch.save or mrl_analysis.save_checkpoint (or a .safetensors file); "
        "download or save it again"
    )


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_object(err)
        if refused is None:
            raise ValueError(_damaged(path, err)) from err
        raise ValueError(
            f"refusing to load {path}: it holds a pickled {refused} object, and unpickling "
            "objects other than tensors and plain containers could run arbitrary code "
            "(checkpoints are loaded with weights_only=True). Fix: if you trust the file, "
            "re-save its weights as a plain state_dict (or with mrl_analysis.save_checkpoint)"
        ) from err
    except Exception as err:
        # _sniff opened the file (a permission error names it there); from here on, garbled
        # bytes break the zip reader or the unpickler anywhere (EOFError, IndexError,
        # KeyError, UnicodeDecodeError, RuntimeError, OSError EINVAL, ...): all mean damaged.
        raise ValueError(_damaged(path, err)) from err


def _damaged(path: Path, err: BaseException) -> str:
    text = str(err)
    # torch wraps the unpickler's reason in advice to load with weights_only=False: keep
    # only the reason (and never give that advice for a file that fails to parse).
    reason = re.search(
        r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S
    )
    detail = " ".join((reason.group(1) if reason else text).split())
    detail = detail if len(detail) <= _DETAIL else detail[:_DETAIL] + "..."
    return (
        f"cannot load checkpoint {path}: the file is truncated, damaged or not a torch "
        f"checkpoint ({type(err).__name__}: {detail}). Fix: download or copy it again, or "
        "re-save it with torch.save / mrl_analysis.save_checkpoint"
    )


def _check_contents(raw: dict, path: Path) -> None:
    """Our format's structure and digest, then finite weights (ours and the authors')."""
    ours = "format" in raw and not isinstance(raw["format"], torch.Tensor)
    if ours:
        if raw["format"] != FORMAT:
            raise ValueError(
                f"{path} has checkpoint format {raw['format']!r}; this version reads "
                f"{FORMAT!r}. Fix: load it with the mrl-analysis version that wrote it and "
                "save it again"
            )
        bad = [k for k in ("config", "state_dict") if not isinstance(raw.get(k), Mapping)]
        if bad:
            raise ValueError(
                f"{path} is an mrl-analysis checkpoint without {' or '.join(map(repr, bad))} "
                f"(it holds {sorted(raw)}): it was not written by save_checkpoint or was "
                "edited. Fix: save the model again with mrl_analysis.save_checkpoint"
            )
        state = raw["state_dict"]
        stored = raw.get("weights_sha256")
        if stored is not None and stored != weights_sha256(state):
            raise ValueError(
                f"{path} is corrupted: its weights no longer match the weights_sha256 written "
                "when it was saved (a changed byte on disk or in a copy). Fix: copy or "
                "download it again, or restore it from a backup / retrain it"
            )
    else:
        state = raw
    _check_finite_weights(state, path)


def _check_finite_weights(state: Mapping[str, Any], path: Path) -> None:
    bad = []
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            count = int(value.numel() - torch.isfinite(value).sum())
            if count:
                bad.append(f"{name} ({count} of {value.numel()} values)")
    if bad:
        more = f" (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise ValueError(
            f"refusing to load {path}: NaN / inf weights in {len(bad)} tensor(s): "
            f"{', '.join(bad[:MAX_LISTED])}{more}. A training run that diverged saves such "
            "weights. Fix: use an earlier checkpoint or retrain (e.g. with a lower lr)"
        )


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict:
    try:
        with safetensors.safe_open(path, framework="pt", device=str(map_location)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(_damaged(path, err)) from err
    if header.get("format") != FORMAT:
        return tensors
    try:
        raw = {
            "format": FORMAT,
            "config": json.loads(header["config"]),
            "state_dict": tensors,
            "class_names": json.loads(header.get("class_names", "[]")),
            "meta": json.loads(header.get("meta", "{}")),
        }
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"cannot load checkpoint {path}: its mrl-analysis header is damaged "
            f"({type(err).__name__}: {err}). Fix: save the model again with save_checkpoint"
        ) from err
    if "weights_sha256" in header:
        raw["weights_sha256"] = header["weights_sha256"]
    return raw


def load_model(
    path: str | Path,
    *,
    kind: HeadKind | None = None,
    arch: str | None = None,
    nesting: list[int] | None = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
) -> MatryoshkaModel:
    """Load a checkpoint (ours or the authors') as a :class:`MatryoshkaModel` in eval mode.

    The model has ``.nesting``, ``.kind``, ``.class_names``, ``.meta``, ``.config`` and
    ``.transform`` (the inference transform: the training dataset's eval transform for
    our checkpoints, the authors' ImageNet transform for theirs).

    The layout is read from the file. ``kind`` is needed only where the keys cannot tell:
    the authors' old MRL-E files and their FF-2048 files hold the same ``fc.weight``;
    their file names (``r50_mrl0_e1_ff2048`` = MRL-E, ``r50_mrl0_e0_ff{k}`` = FF-k,
    ``r50_mrl1_…`` = MRL) decide when the name is kept. ``arch``, ``nesting`` and
    ``num_classes`` state what you expect; a checkpoint that does not fit raises a
    ValueError listing missing / unexpected keys and shape mismatches. For MRL-E,
    ``nesting`` may be any sizes (its shared head classifies at every size).
    ``map_location`` is the device the returned model lives on.
    """
    path = Path(path)
    if kind is not None:
        check_kind(kind)
    if arch is not None and not isinstance(arch, str):
        raise TypeError(f"arch must be a torchvision model name, got {arch!r}")
    if nesting is not None:
        nesting = check_nesting(nesting)
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", low=1)
    # Weights are read onto the CPU and the finished model is moved once.
    raw = load_checkpoint(path)

    if "format" in raw and not isinstance(raw["format"], torch.Tensor):
        config = dict(raw["config"])
        state = raw["state_dict"]
        class_names = list(raw.get("class_names") or []) or None
        meta = dict(raw.get("meta") or {})
        transform = _dataset_transform(meta.get("dataset"))
        origin = f"saved config {raw['config']}"
    else:
        config, state, layout = from_official(raw, path.name, kind=kind, arch=arch)
        class_names = imagenet_class_names() if config["num_classes"] == 1000 else None
        meta = official_meta(layout, path.name)
        transform = official_transform()
        origin = f"the authors' {layout} layout"

    requested = {"kind": kind, "arch": arch, "nesting": nesting, "num_classes": num_classes}
    config.update({k: v for k, v in requested.items() if v is not None})
    model = _build(config)
    _load_state(model, state, path, origin)
    model.class_names = class_names
    model.meta = meta
    model.transform = transform
    return model.to(map_location).eval()


def _build(config: Mapping[str, Any]) -> MatryoshkaModel:
    kwargs = dict(config)
    blurpool = bool(kwargs.pop("blurpool", False))
    try:
        model = build_model(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"cannot build a model from checkpoint config {dict(config)}: {err}"
        ) from err
    if blurpool:
        apply_blurpool(model.backbone)
        model.config["blurpool"] = True
    return model


def _load_state(
    model: MatryoshkaModel, state: Mapping[str, torch.Tensor], path: Path, origin: str
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        lines = [
            f"{path} does not fit a {model.config.get('arch')} {model.kind} model with "
            f"nesting {model.nesting} and {model.num_classes} classes:"
        ]
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
                lines.append(f"  {label} ({len(items)}): {', '.join(items[:MAX_LISTED])}{more}")
        lines.append(f"The checkpoint seems to be: {origin}; {_describe_head(state)}.")
        lines.append(
            "Omit kind= / arch= / nesting= / num_classes= to use the checkpoint's own, "
            "or pass values that match it."
        )
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)


def _describe_head(state: Mapping[str, torch.Tensor]) -> str:
    heads = head_indices(state)
    if heads:
        widths = [state[f"fc.nesting_classifier_{i}.weight"].shape[1] for i in heads]
        classes = state[f"fc.nesting_classifier_{heads[0]}.weight"].shape[0]
        return (
            f"head widths {widths} (one per nesting size; one wide head = MRL-E), {classes} classes"
        )
    if "fc.weight" in state:
        classes, width = state["fc.weight"].shape
        return f"a single fc head of width {width} (FF-{width} or MRL-E), {classes} classes"
    return "no classifier head (no fc.* keys)"


def _dataset_transform(dataset: str | None) -> Callable | None:
    if not dataset:
        return None
    from mrl_analysis.data.registry import get_eval_transform  # lazy: only our checkpoints need it

    try:
        return get_eval_transform(dataset)
    except (KeyError, ValueError) as err:
        warnings.warn(
            f"no inference transform for dataset {dataset!r} ({err}); model.transform is None",
            stacklevel=3,
        )
        return None
