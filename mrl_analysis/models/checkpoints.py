"""Save and load Matryoshka checkpoints: our own format and the authors' released files.

Our format is a ``torch.save`` dict that loads with ``weights_only=True``::

    {"format": "mrl-analysis/1", "config": {...build_model kwargs...},
     "state_dict": {...}, "class_names": [...], "meta": {...}, "train_state": {...}}

or, for a path ending in ``.safetensors``, the tensors of ``state_dict`` with ``format``,
``config``, ``class_names`` and ``meta`` as JSON strings in the safetensors metadata
header (no ``train_state``). Every save goes to a temporary file first and is renamed
over the target with ``os.replace``, so an interrupted save never leaves a broken file.

:func:`load_model` also reads the authors' ImageNet ResNet50 checkpoints
(``r50_mrl1_e0_ff2048.pt`` and friends): a DDP ``module.`` prefix, FFCV BlurPool-wrapped
strided convs, MRL heads (``fc.nesting_classifier_{i}``), MRL-E heads (old ``fc.weight``
or new ``fc.nesting_classifier_0``) and FF-k heads (``fc.weight`` of width k).
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
import torchvision
from torch import nn
from torch.nn import functional as F

from mrl_analysis.models.network import (
    HEAD_KINDS,
    HeadKind,
    MatryoshkaModel,
    build_backbone,
    build_model,
)

FORMAT = "mrl-analysis/1"
OFFICIAL_ARCH = "resnet50"
_MAX_LISTED = 5


class BlurPoolConv2d(nn.Module):
    """FFCV's BlurPool: a fixed 3x3 binomial blur *before* a strided conv (anti-aliasing).

    State-dict names match FFCV (``conv.weight``, ``blur_filter``) so the authors'
    checkpoints load without renaming.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
        self.conv = conv
        self.register_buffer("blur_filter", kernel.repeat(conv.in_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter, stride=1, padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)


def apply_blurpool(module: nn.Module) -> nn.Module:
    """Wrap every ``Conv2d`` with stride > 1 and ``in_channels >= 16`` in :class:`BlurPoolConv2d`.

    The same rule as FFCV's ImageNet recipe, which the MRL authors trained with; for
    ResNet50 it wraps ``layer{2,3,4}.0.conv2`` and ``layer{2,3,4}.0.downsample.0``
    (not the 3-channel stem). Works in place and returns ``module``.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(module, name, BlurPoolConv2d(child))
        else:
            apply_blurpool(child)
    return module


def official_transform() -> torchvision.transforms.Compose:
    """The authors' ImageNet inference transform (resize 256, center crop 224, normalize)."""
    t = torchvision.transforms
    return t.Compose(
        [
            t.Resize(256),
            t.CenterCrop(224),
            t.ToTensor(),
            t.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )


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
    if kind is not None and kind not in HEAD_KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {HEAD_KINDS}")
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
        config, state, layout = _from_official(raw, path.name, kind=kind, arch=arch)
        class_names = _imagenet_class_names() if config["num_classes"] == 1000 else None
        meta = {
            "source": "official MRL release (Kusupati et al. 2022)",
            "layout": layout,
            "file": path.name,
            # The registry's ImageNet eval transform is the authors' one, so a re-saved copy
            # of this model keeps its transform.
            "dataset": "imagenet",
        }
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
                more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
                lines.append(f"  {label} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}")
        lines.append(f"The checkpoint seems to be: {origin}; {_describe_head(state)}.")
        lines.append(
            "Omit kind= / arch= / nesting= / num_classes= to use the checkpoint's own, "
            "or pass values that match it."
        )
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)


def _head_indices(state: Mapping[str, torch.Tensor]) -> list[int]:
    found = (re.fullmatch(r"fc\.nesting_classifier_(\d+)\.weight", k) for k in state)
    return sorted(int(m.group(1)) for m in found if m)


def _describe_head(state: Mapping[str, torch.Tensor]) -> str:
    heads = _head_indices(state)
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
    from mrl_analysis.data.datasets import get_eval_transform  # lazy: only our checkpoints need it

    try:
        return get_eval_transform(dataset)
    except (KeyError, ValueError) as err:
        warnings.warn(
            f"no inference transform for dataset {dataset!r} ({err}); model.transform is None",
            stacklevel=3,
        )
        return None


def _imagenet_class_names() -> list[str]:
    # torchvision ships the ImageNet-1k names (standard sorted-wnid order) in its weight
    # metadata; reading them downloads nothing.
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# --------------------------------------------------------------------------- authors' files


def _kind_from_filename(name: str) -> HeadKind | None:
    match = re.search(r"mrl([01])_e([01])_ff\d+", name)
    if match is None:
        return None
    if match.group(2) == "1":
        return "mrl-e"
    return "mrl" if match.group(1) == "1" else "ff"


def _from_official(
    raw: Mapping[str, Any], filename: str, *, kind: HeadKind | None, arch: str | None
) -> tuple[dict, dict[str, torch.Tensor], str]:
    """Our ``config`` and ``state_dict`` (our key names) for an authors' state_dict."""
    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{filename} is neither an mrl-analysis checkpoint (no 'format' entry) nor a plain "
            f"state_dict (non-tensor entries: {not_tensors[:_MAX_LISTED]})"
        )
    state = dict(raw)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    arch = arch or OFFICIAL_ARCH
    with torch.device("meta"):  # only the feature dim is needed; allocates nothing
        _, feature_dim = build_backbone(arch)

    heads = _head_indices(state)
    if heads:
        widths = [int(state[f"fc.nesting_classifier_{i}.weight"].shape[1]) for i in heads]
        classes = int(state[f"fc.nesting_classifier_{heads[0]}.weight"].shape[0])
        one_wide = len(heads) == 1 and widths[0] == feature_dim
        if kind == "ff" or (kind == "mrl-e" and not one_wide):
            raise ValueError(
                f"{filename} has {len(heads)} nesting classifier(s) of widths {widths}, "
                f"which is not a {kind} head; omit kind= or use kind='mrl'"
            )
        if one_wide and kind != "mrl":
            kind, layout, sizes = "mrl-e", "MRL-E (new naming)", None
        else:
            kind, layout, sizes = "mrl", "MRL", widths
    elif "fc.weight" in state:
        classes, width = (int(s) for s in state["fc.weight"].shape)
        if width < feature_dim:
            if kind not in (None, "ff"):
                raise ValueError(
                    f"{filename} has a single fc head of width {width} < {feature_dim}: an "
                    f"FF-{width} model, not {kind}; omit kind= or use kind='ff'"
                )
            kind = "ff"
        else:
            kind = kind or _kind_from_filename(filename)
            if kind not in ("mrl-e", "ff"):
                raise ValueError(
                    f"{filename}: a single fc head of width {width} is either an MRL-E model "
                    f"(the authors' old naming) or an FF-{width} model, and the keys cannot "
                    "tell them apart. Pass kind='mrl-e' or kind='ff' (the authors' files are "
                    "named r50_mrl0_e1_ff2048 for MRL-E and r50_mrl0_e0_ff2048 for FF-2048)"
                )
        if kind == "mrl-e":
            layout, sizes = "MRL-E (old naming)", None
            for p in ("weight", "bias"):
                state[f"fc.nesting_classifier_0.{p}"] = state.pop(f"fc.{p}")
        else:
            layout, sizes = f"FF-{width}", [width]
    else:
        raise ValueError(
            f"{filename} has no classifier head (no fc.* keys) - is it an MRL ResNet "
            f"checkpoint? First keys: {list(state)[:_MAX_LISTED]}"
        )

    ours = {k if k.startswith("fc.") else f"backbone.{k}": v for k, v in state.items()}
    config = {
        "arch": arch,
        "kind": kind,
        "nesting": sizes,
        "num_classes": classes,
        "blurpool": any(k.endswith(".blur_filter") for k in state),
    }
    return config, ours, layout
