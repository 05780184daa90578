"""Save and load Matryoshka checkpoints: our own format and the authors' released files.

Our format is a ``torch.save`` dict that loads with ``weights_only=True``::

    {"format": "mrl-analysis/1", "config": {...build_model kwargs...},
     "state_dict": {...}, "class_names": [...], "meta": {...}, "train_state": {...}}

or, for a path ending in ``.safetensors``, the tensors of ``state_dict`` with ``format``,
``config``, ``class_names`` and ``meta`` as JSON strings in the safetensors metadata
header (no ``train_state``). Every save goes to a temporary file first and is renamed
over the target with ``os.replace``, so an interrupted save never leaves a broken file.

:func:`load_model` also reads the authors' ImageNet ResNet50 checkpoints
(``r50_mrl1_e0_ff2048.pt`` and friends); their layouts are read in
:mod:`mrl_analysis.models.official`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import safetensors
import safetensors.torch
import torch

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
        except TypeError as err:
            raise ValueError(
                f"cannot write {path}: config, class_names and meta must be JSON-serialisable "
                f"for .safetensors ({err}); convert values with float()/int()/str()/.tolist()"
            ) from err
        _write_atomically(path, lambda f: f.write(safetensors.torch.save(tensors, metadata)))
        return path

    payload = {
        "format": FORMAT,
        "config": config,
        "state_dict": model.state_dict(),
        "class_names": class_names,
        "meta": meta,
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_weights_only(tmp: Path) -> None:
    # mmap: unpickles the object tree (what weights_only vets) without reading tensor data.
    try:
        torch.load(tmp, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(
            "refusing to save a checkpoint that torch.load(weights_only=True) cannot read "
            f"(it holds {_refused_global(err) or 'an unsupported object'}); keep meta and "
            "train_state to tensors, numbers, strings, lists, tuples and dicts "
            "(e.g. float(x), x.tolist())"
        ) from err


def _refused_global(err: pickle.UnpicklingError) -> str | None:
    """The Python object a weights_only load refused, if that is why it failed."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else None


# --------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """The raw contents of a checkpoint file, with tensors on ``map_location``.

    Our ``.pt`` files give the format dict; our ``.safetensors`` files give the same dict
    (without ``train_state``); any other file gives its plain ``state_dict``
    (e.g. the authors' checkpoints). Files holding pickled Python objects other than
    tensors and plain containers are refused with a ValueError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if refused is None:
            raise ValueError(f"{path} is not a readable torch checkpoint") from err
        raise ValueError(
            f"refusing to load {path}: it holds a pickled {refused} object, and unpickling "
            "objects other than tensors and plain containers could run arbitrary code "
            "(checkpoints are loaded with weights_only=True). Re-save the weights as a plain "
            "state_dict, or with mrl_analysis.save_checkpoint"
        ) from err
    except RuntimeError as err:
        raise ValueError(f"{path} is not a readable torch checkpoint ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    return raw


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict:
    try:
        with safetensors.safe_open(path, framework="pt", device=str(map_location)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    if header.get("format") != FORMAT:
        return tensors
    return {
        "format": FORMAT,
        "config": json.loads(header["config"]),
        "state_dict": tensors,
        "class_names": json.loads(header.get("class_names", "[]")),
        "meta": json.loads(header.get("meta", "{}")),
    }


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
    # Weights are read onto the CPU and the finished model is moved once.
    raw = load_checkpoint(path)

    if "format" in raw and not isinstance(raw["format"], torch.Tensor):
        if raw["format"] != FORMAT:
            raise ValueError(
                f"{path} has checkpoint format {raw['format']!r}; this version reads {FORMAT!r}"
            )
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
    if nesting is not None:
        config["nesting"] = [int(m) for m in nesting]
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
