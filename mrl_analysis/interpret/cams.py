"""Grad-CAM across nesting sizes (paper Figure 9, Appendix J "Grad-CAM examples").

All sizes of a Matryoshka model share one backbone, so a class activation map "at size
``m``" is the CAM of the backbone's target layer for the logit of head ``m`` (MRL), of the
shared head sliced to its first ``m`` columns (MRL-E, any ``m``), or of the single FF head.
:func:`size_cams` computes them for every image × size with `pytorch-grad-cam
<https://github.com/jacobgil/pytorch-grad-cam>`_ in batches: each image is repeated once
per size, the model outputs the logits of all requested sizes side by side
(``[B, S * C]``), and row ``(image i, size s)`` targets output ``s * C + class``. Because
the model is in eval mode, rows do not interact, so one forward/backward pass yields every
panel and the result equals the library run on a single-head model per size.

How the maps are made travels as one :class:`CamSettings`: the CAM method (any of
:data:`CAM_METHODS`; note that EigenCAM ignores the target, so with a shared backbone it
draws the same map at every size), the target class per panel (the prediction at that
size, ``"predicted"``, or the true class, ``"true"``; explicit classes are the ``classes``
argument of :func:`size_cams`), the layer and the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mrl_analysis.core.checks import check_finite, check_int, check_labels, check_nesting

#: CAM methods by name (``CamSettings.method``); a ``BaseCAM`` subclass works too.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "eigengradcam": EigenGradCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
_GRADIENT_FREE = (EigenCAM, ScoreCAM, AblationCAM)


def cam_method(method: str | type[BaseCAM]) -> type[BaseCAM]:
    """The pytorch-grad-cam class for a name in :data:`CAM_METHODS` (or a class itself)."""
    if isinstance(method, type) and issubclass(method, BaseCAM):
        return method
    key = str(method).lower().replace("_", "").replace(" ", "")
    key = {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}.get(key, key)
    if key not in CAM_METHODS:
        raise ValueError(
            f"unknown CAM method {method!r}: use one of {', '.join(CAM_METHODS)} "
            "or a pytorch_grad_cam BaseCAM subclass"
        )
    return CAM_METHODS[key]


Target = Literal["predicted", "true"]


@dataclass(frozen=True)
class CamSettings:
    """How :func:`size_cams` draws its maps.

    ``method``: a name in :data:`CAM_METHODS` or a ``BaseCAM`` subclass; ``target``: the
    class each panel explains, ``"predicted"`` (the prediction at that size) or ``"true"``
    (needs labels); ``target_layer``: dotted module name under the model (default
    :func:`default_target_layer`); ``batch_size``: image × size rows per pass.
    """

    method: str | type[BaseCAM] = "gradcam"
    target: Target = "predicted"
    target_layer: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        cam_method(self.method)
        if self.target not in ("predicted", "true"):
            raise ValueError(
                f"target must be 'predicted' or 'true', not {self.target!r} "
                "(explicit classes go to size_cams(classes=...))"
            )
        check_int(self.batch_size, "batch_size", low=1)

    @property
    def method_name(self) -> str:
        return self.method if isinstance(self.method, str) else self.method.__name__


#: Grad-CAM of the predicted class at the default layer.
DEFAULT_CAM = CamSettings()


# ------------------------------------------------------------------ target layers


def _vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    patches = tokens[:, 1:, :]  # drop the class token
    side = math.isqrt(patches.shape[1])
    return patches.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)


def _channels_last_to_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _stage_candidates(backbone: nn.Module) -> list[str]:
    """Names of the backbone's stage outputs, shallow to deep, for a CNN backbone."""
    if all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):  # ResNet, ResNeXt, Wide
        return [f"layer{i}.{len(getattr(backbone, f'layer{i}')) - 1}" for i in range(1, 5)]
    for attr in ("trunk_output", "features", "layers"):  # RegNet; VGG/DenseNet/...; MNASNet
        stages = getattr(backbone, attr, None)
        if isinstance(stages, nn.Sequential):
            return [f"{attr}.{name}" for name, _ in stages.named_children()]
    return [name for name, mod in backbone.named_modules() if isinstance(mod, nn.Conv2d)]


def default_target_layer(
    model: nn.Module, image_shape: Sequence[int], *, min_resolution: int = 4
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]:
    """A sensible CAM layer for ``model``'s torchvision backbone, and its reshape transform.

    Returns ``(name, reshape_transform)``, ``name`` a dotted path under ``model``. CNNs:
    the deepest stage output (ResNet ``layer4``, ``features[-1]``, RegNet's last trunk
    stage, ...) whose feature map is still at least ``min_resolution`` pixels on its short
    side for an input of ``image_shape`` (C, H, W): on 28-64 px inputs an ImageNet stem
    shrinks ``layer4`` to 1-2 px, where every CAM is a constant. ViT: the last encoder
    block's ``ln_1`` (tokens reshaped to the patch grid); Swin: the last block's ``norm1``.
    """
    backbone = model.backbone
    arch = type(backbone).__name__
    if arch == "VisionTransformer":
        last = len(backbone.encoder.layers) - 1
        return f"backbone.encoder.layers.{last}.ln_1", _vit_tokens_to_grid
    if arch == "SwinTransformer":
        stage = len(backbone.features) - 1
        block = len(backbone.features[stage]) - 1
        return f"backbone.features.{stage}.{block}.norm1", _channels_last_to_first

    candidates = _stage_candidates(backbone)
    if not candidates:
        raise ValueError(f"no convolutional layer found in {arch}: pass target_layer= explicitly")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        backbone.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in candidates
    ]
    param = next(model.parameters())
    probe = torch.zeros((1, *image_shape), dtype=param.dtype, device=param.device)
    was_training = backbone.training
    backbone.eval()  # a probe must not update batch-norm statistics
    try:
        with torch.no_grad():
            backbone(probe)
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    spatial = [n for n in candidates if len(shapes.get(n, ())) == 4]
    if not spatial:
        raise ValueError(f"no layer of {arch} gives a 2-D feature map: pass target_layer=")
    large = [n for n in spatial if min(shapes[n][2:]) >= min_resolution]
    return f"backbone.{(large or spatial[:1])[-1]}", None


# -------------------------------------------------------------------- the model


def _check_sizes(model: nn.Module, sizes: Sequence[int] | None) -> list[int]:
    """``sizes`` in the order given (each a column of the figure), or the model's nesting."""
    nesting = check_nesting(model.nesting)
    if sizes is None:
        return nesting
    chosen = [check_int(m, "sizes entry") for m in sizes]
    if not chosen:
        raise ValueError("sizes is empty: give at least one representation size")
    if model.kind == "mrl-e":
        d = int(model.feature_dim)
        bad = [m for m in chosen if not 1 <= m <= d]
        if bad:
            raise ValueError(f"sizes {bad} are outside 1..{d} (the model's feature dim)")
    else:
        bad = [m for m in chosen if m not in nesting]
        if bad:
            raise ValueError(
                f"a {model.kind} model has heads only for sizes {nesting}, not {bad} "
                "(only MRL-E classifies at sizes between the trained ones)"
            )
    return chosen


def _stacked_logits(model: nn.Module, features: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Logits ``[S, N, C]`` at every size in ``sizes``."""
    if model.kind == "mrl-e":
        return torch.stack([model.logits_at(features, m) for m in sizes])
    every = model.fc(features)  # all trained heads at once
    return every[[model.nesting.index(m) for m in sizes]]


@contextmanager
def _gradients_from(model: nn.Module, layer: nn.Module, *, enabled: bool) -> Iterator[None]:
    """Backpropagate only from the heads to ``layer``: the CAM needs no other gradient.

    The layer's output is cut from the graph below it and made a leaf that requires
    grad, and the parameters are frozen meanwhile, so backward neither runs through the
    layers before ``layer`` nor computes weight gradients (several times faster). The
    hook is registered before pytorch-grad-cam's, which therefore see the new leaf.
    """
    if not enabled:
        yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]

    def cut(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        return output.detach().requires_grad_(True) if torch.is_grad_enabled() else None

    handle = layer.register_forward_hook(cut)
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)


class _SizeStack(nn.Module):
    """``x → [N, S * C]``: the logits of all requested sizes side by side."""

    def __init__(self, model: nn.Module, sizes: list[int]) -> None:
        super().__init__()
        self.model = model
        self.sizes = sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = _stacked_logits(self.model, self.model.embed(x), self.sizes)
        return logits.permute(1, 0, 2).reshape(x.shape[0], -1)


# ---------------------------------------------------------------------- CAMs


@dataclass
class SizeCams:
    """CAMs of ``n`` images at ``S`` sizes.

    ``cams[i, s]`` is the map of image ``i`` at size ``sizes[s]``, float32 in [0, 1] at the
    input resolution. ``table`` has one row per image × size: ``image`` (position),
    ``sample_index``, ``truncate_dim``, ``label`` (-1 if unknown), ``predicted``,
    ``probability`` (of the prediction), ``correct``, ``target_class``,
    ``target_probability``.
    """

    cams: np.ndarray
    sizes: list[int]
    table: pd.DataFrame
    method: str
    target_layer: str

    @property
    def sample_index(self) -> np.ndarray:
        """The ``sample_index`` of each image, in image order ``[n]``."""
        first = self.table.drop_duplicates("image").sort_values("image")
        return first["sample_index"].to_numpy()


def _target_classes(
    target: str,
    classes: np.ndarray | None,
    preds: np.ndarray,
    labels: np.ndarray | None,
    num_classes: int,
) -> np.ndarray:
    n, s = preds.shape
    if classes is None:
        if target == "predicted":
            return preds
        if labels is None:
            raise ValueError("target='true' needs labels=: pass the images' true classes")
        return np.broadcast_to(labels[:, None], (n, s))
    given = np.asarray(classes, dtype=np.int64)
    try:
        classes = np.broadcast_to(given[:, None] if given.ndim == 1 else given, (n, s))
    except ValueError:
        raise ValueError(
            f"target classes of shape {given.shape} fit neither [n]={n} nor [n, S]={(n, s)}"
        ) from None
    if classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"target classes must lie in 0..{num_classes - 1}")
    return classes


def size_cams(
    model: nn.Module,
    images: torch.Tensor,
    sizes: Sequence[int] | None = None,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    settings: CamSettings = DEFAULT_CAM,
    classes: Sequence[int] | np.ndarray | None = None,
    sample_index: Sequence[int] | np.ndarray | None = None,
) -> SizeCams:
    """CAMs of ``images [n, C, H, W]`` (model-ready tensors) at every size in ``sizes``.

    ``sizes`` defaults to ``model.nesting`` (MRL-E: any ``1 <= m <= d``); ``settings``: the
    method, target rule, layer and batch size (:class:`CamSettings`). ``classes``: explicit
    target classes ``[n]`` / ``[n, S]`` instead of ``settings.target``. ``sample_index``
    only labels the table rows (default ``0..n-1``).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty batch [n, C, H, W], got {tuple(images.shape)}"
        )
    check_finite(images.detach().cpu().numpy(), "images")
    chosen = _check_sizes(model, sizes)
    cam_class = cam_method(settings.method)
    batch_size, target_layer = settings.batch_size, settings.target_layer
    n, s = images.shape[0], len(chosen)
    label_arr = None
    if labels is not None:
        label_arr = check_labels(np.asarray(labels).reshape(-1), n, "labels")
    index = np.arange(n) if sample_index is None else np.asarray(sample_index).reshape(-1)
    if index.shape[0] != n:
        raise ValueError(f"sample_index has {index.shape[0]} entries for {n} images")

    param = next(model.parameters())
    images = images.to(device=param.device, dtype=param.dtype)
    if target_layer is None:
        target_layer, reshape = default_target_layer(model, tuple(images.shape[1:]))
    else:
        reshape = None
    try:
        layer = model.get_submodule(target_layer)
    except AttributeError:
        raise ValueError(
            f"model has no module {target_layer!r}: give a dotted name from "
            "model.named_modules(), e.g. 'backbone.layer4'"
        ) from None

    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                _stacked_logits(model, model.embed(images[i : i + batch_size]), chosen)
                for i in range(0, n, batch_size)
            ],
            dim=1,
        )  # [S, n, C]
    num_classes = logits.shape[2]
    probs = torch.softmax(logits.float(), dim=2).cpu().numpy()
    preds = probs.argmax(axis=2).T  # [n, S]
    classes = _target_classes(settings.target, classes, preds, label_arr, num_classes)

    # Row r = (image r // S, size r % S) targets column (r % S) * C + class.
    flat_targets = (np.arange(s)[None, :] * num_classes + classes).reshape(-1)
    stack = _SizeStack(model, chosen)
    maps = []
    with _gradients_from(model, layer, enabled=cam_class not in _GRADIENT_FREE):
        cam = cam_class(model=stack, target_layers=[layer], reshape_transform=reshape)
        try:
            for start in range(0, n * s, batch_size):
                rows = torch.arange(start, min(start + batch_size, n * s))
                targets = [ClassifierOutputTarget(int(t)) for t in flat_targets[rows.numpy()]]
                out = cam(input_tensor=images[rows // s], targets=targets)
                maps.append(np.asarray(out, dtype=np.float32))
        finally:
            cam.activations_and_grads.release()
            model.train(was_training)
    cams = np.concatenate(maps).reshape(n, s, *maps[0].shape[1:])

    rows_i, rows_s = np.divmod(np.arange(n * s), s)
    taken = np.take_along_axis(probs, classes.T[:, :, None], axis=2)[:, :, 0]  # [S, n]
    table = pd.DataFrame(
        {
            "image": rows_i,
            "sample_index": index[rows_i],
            "truncate_dim": np.asarray(chosen)[rows_s],
            "label": -1 if label_arr is None else label_arr[rows_i],
            "predicted": preds.reshape(-1),
            "probability": probs.max(axis=2).T.reshape(-1),
            "correct": (preds == (-1 if label_arr is None else label_arr[:, None])).reshape(-1),
            "target_class": classes.reshape(-1),
            "target_probability": taken.T.reshape(-1),
        }
    )
    return SizeCams(
        cams=cams, sizes=chosen, table=table, method=settings.method_name, target_layer=target_layer
    )
