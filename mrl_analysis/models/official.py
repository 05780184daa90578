"""The authors' released ImageNet ResNet50 checkpoints (``r50_mrl1_e0_ff2048.pt`` and friends).

Their files are plain state_dicts saved from a DDP wrapper (``module.`` prefix), with FFCV
BlurPool-wrapped strided convs (:class:`BlurPoolConv2d`), and one of four heads: MRL
(``fc.nesting_classifier_{i}``), MRL-E (old ``fc.weight`` or new ``fc.nesting_classifier_0``)
or FF-k (``fc.weight`` of width k). :func:`from_official` reads which, and gives our config
and key names; :func:`mrl_analysis.models.checkpoints.load_model` builds the model from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from mrl_analysis.core.kinds import HeadKind
from mrl_analysis.models.network import build_backbone

OFFICIAL_ARCH = "resnet50"
#: How many keys an error message lists.
MAX_LISTED = 5


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


def official_meta(layout: str, filename: str) -> dict[str, str]:
    """``model.meta`` of a model loaded from the authors' file ``filename``."""
    return {
        "source": "official MRL release (Kusupati et al. 2022)",
        "layout": layout,
        "file": filename,
        # The registry's ImageNet eval transform is the authors' one, so a re-saved copy
        # of this model keeps its transform.
        "dataset": "imagenet",
    }


def imagenet_class_names() -> list[str]:
    """The ImageNet-1k class names in the standard sorted-wnid order."""
    # torchvision ships them in its weight metadata; reading them downloads nothing.
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def head_indices(state: Mapping[str, torch.Tensor]) -> list[int]:
    """The ``i`` of every ``fc.nesting_classifier_{i}`` head in ``state``, sorted."""
    found = (re.fullmatch(r"fc\.nesting_classifier_(\d+)\.weight", k) for k in state)
    return sorted(int(m.group(1)) for m in found if m)


def _kind_from_filename(name: str) -> HeadKind | None:
    match = re.search(r"mrl([01])_e([01])_ff\d+", name)
    if match is None:
        return None
    if match.group(2) == "1":
        return "mrl-e"
    return "mrl" if match.group(1) == "1" else "ff"


def from_official(
    raw: Mapping[str, Any], filename: str, *, kind: HeadKind | None, arch: str | None
) -> tuple[dict, dict[str, torch.Tensor], str]:
    """``(config, state_dict, layout)`` in our terms for an authors' state_dict ``raw``.

    ``config`` holds :func:`~mrl_analysis.models.network.build_model`'s keywords plus
    ``blurpool``; ``layout`` names what was found (``"MRL"``, ``"FF-256"``, ...). ``kind``
    is needed only where the keys cannot tell (a single full-width ``fc`` head is MRL-E or
    FF-d); the authors' file names decide then when they are kept.
    """
    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{filename} is neither an mrl-analysis checkpoint (no 'format' entry) nor a plain "
            f"state_dict (non-tensor entries: {not_tensors[:MAX_LISTED]})"
        )
    state = dict(raw)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    arch = arch or OFFICIAL_ARCH
    with torch.device("meta"):  # only the feature dim is needed; allocates nothing
        _, feature_dim = build_backbone(arch)

    heads = head_indices(state)
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
            f"checkpoint? First keys: {list(state)[:MAX_LISTED]}"
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
