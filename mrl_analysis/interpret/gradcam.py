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

The target class per panel is the prediction at that size (``target="predicted"``), the
true class (``"true"``) or any given class. Any of the library's CAMs can be chosen
(:data:`CAM_METHODS`); note that EigenCAM ignores the target, so with a shared backbone it
draws the same map at every size.

Beyond the paper (:func:`cam_box_metrics`, :func:`cam_rank_similarity`): where a dataset
has object boxes (Tiny-ImageNet), the share of CAM energy inside the box and whether the
CAM's peak falls in it (the "pointing game"), per size; and the Spearman correlation of
each size's CAM with the largest size's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
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
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.stats import rankdata
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

__all__ = [
    "CAM_METHODS",
    "SizeCams",
    "cam_box_metrics",
    "cam_grid_figure",
    "cam_metric_summary",
    "cam_method",
    "cam_rank_similarity",
    "cam_summary_figure",
    "dataset_cams",
    "default_target_layer",
    "image_to_rgb",
    "load_images",
    "overlay_cam",
    "size_cams",
]

#: CAM methods by name (``method=`` of :func:`size_cams`); a ``BaseCAM`` subclass works too.
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
    nesting = [int(m) for m in model.nesting]
    if sizes is None:
        return nesting
    chosen = [int(m) for m in sizes]
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


def _target_classes(
    target: str | np.ndarray, preds: np.ndarray, labels: np.ndarray | None, num_classes: int
) -> np.ndarray:
    n, s = preds.shape
    if isinstance(target, str):
        if target == "predicted":
            return preds
        if target == "true":
            if labels is None:
                raise ValueError("target='true' needs labels=: pass the images' true classes")
            return np.broadcast_to(labels[:, None], (n, s))
        raise ValueError(f"target must be 'predicted', 'true' or class indices, not {target!r}")
    classes = np.asarray(target, dtype=np.int64)
    if classes.ndim == 1:
        classes = classes[:, None]
    try:
        classes = np.broadcast_to(classes, (n, s))
    except ValueError:
        raise ValueError(
            f"target classes of shape {np.shape(target)} fit neither [n]={n} nor [n, S]={(n, s)}"
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
    target: str | np.ndarray = "predicted",
    method: str | type[BaseCAM] = "gradcam",
    target_layer: str | None = None,
    sample_index: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
) -> SizeCams:
    """CAMs of ``images [n, C, H, W]`` (model-ready tensors) at every size in ``sizes``.

    ``sizes`` defaults to ``model.nesting`` (MRL-E: any ``1 <= m <= d``). ``target``:
    ``"predicted"`` (the class predicted at each size), ``"true"`` (needs ``labels``) or
    class indices ``[n]`` / ``[n, S]``. ``method``: a name in :data:`CAM_METHODS`.
    ``target_layer``: dotted module name under ``model`` (default
    :func:`default_target_layer`). ``batch_size`` counts image × size rows per pass.
    ``sample_index`` only labels the table rows (default ``0..n-1``).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty batch [n, C, H, W], got {tuple(images.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chosen = _check_sizes(model, sizes)
    cam_class = cam_method(method)
    n, s = images.shape[0], len(chosen)
    label_arr = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if label_arr is not None and label_arr.shape[0] != n:
        raise ValueError(f"labels has {label_arr.shape[0]} entries for {n} images")
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
    classes = _target_classes(target, preds, label_arr, num_classes)

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
    name = method if isinstance(method, str) else method.__name__
    return SizeCams(cams=cams, sizes=chosen, table=table, method=name, target_layer=target_layer)


def load_images(
    dataset: Dataset, indices: Sequence[int] | np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    """``(images [n, C, H, W], labels [n])`` of ``dataset[i]`` for ``i`` in ``indices``."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("indices is empty: choose at least one sample")
    if indices.min() < 0 or indices.max() >= len(dataset):
        raise ValueError(f"indices must lie in 0..{len(dataset) - 1} (the dataset's size)")
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=len(indices))
    images, labels = next(iter(loader))
    return images, torch.as_tensor(labels).numpy().astype(np.int64)


def dataset_cams(
    model: nn.Module,
    dataset: Dataset,
    indices: Sequence[int] | np.ndarray,
    sizes: Sequence[int] | None = None,
    *,
    images_per_batch: int = 16,
    progress: bool = True,
    **kwargs: Any,
) -> SizeCams:
    """:func:`size_cams` for ``dataset[i]`` over ``indices``, ``images_per_batch`` at a time.

    Labels come from the dataset; ``kwargs`` go to :func:`size_cams` (``target`` as
    ``"predicted"`` or ``"true"``: explicit classes would not follow the batches).
    """
    if not isinstance(kwargs.get("target", "predicted"), str):
        raise ValueError("dataset_cams takes target='predicted' or 'true', not class arrays")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("indices is empty: choose at least one sample")
    if indices.min() < 0 or indices.max() >= len(dataset):
        raise ValueError(f"indices must lie in 0..{len(dataset) - 1} (the dataset's size)")
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=images_per_batch)
    parts: list[SizeCams] = []
    done = 0
    for images, labels in tqdm(loader, desc="Grad-CAM", disable=not progress):
        part = size_cams(
            model,
            images,
            sizes,
            labels=labels.numpy(),
            sample_index=indices[done : done + len(labels)],
            **kwargs,
        )
        part.table["image"] += done
        parts.append(part)
        done += len(labels)
    first = parts[0]
    return SizeCams(
        cams=np.concatenate([p.cams for p in parts]),
        sizes=first.sizes,
        table=pd.concat([p.table for p in parts], ignore_index=True),
        method=first.method,
        target_layer=first.target_layer,
    )


# ----------------------------------------------------------------- measurements


def _check_cams(cams: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 4 or cams.shape[1] != len(sizes):
        raise ValueError(
            f"cams must have shape [n, len(sizes)={len(sizes)}, H, W], got {cams.shape}"
        )
    return cams


def cam_box_metrics(
    cams: np.ndarray,
    boxes: np.ndarray,
    sizes: Sequence[int],
    *,
    sample_index: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """How well each size's CAM falls on the object box, one row per image × size.

    ``cams [n, S, H, W]``; ``boxes [n, 4]`` as ``(x0, y0, x1, y1)`` in the CAM's pixel
    coordinates, both ends inclusive (Tiny-ImageNet's 64 px boxes as they are); images
    without a box (NaN) are left out. Columns: ``image, sample_index, truncate_dim,
    energy_in_box`` (share of the CAM's mass inside the box), ``box_area_fraction`` (the
    same share for a uniform map: the chance level), ``pointing_hit`` (the CAM's maximum
    lies in the box).
    """
    cams = _check_cams(cams, sizes)
    boxes = np.asarray(boxes, dtype=np.float64)
    n, s, h, w = cams.shape
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape [n, 4] = [{n}, 4], got {boxes.shape}")
    index = np.arange(n) if sample_index is None else np.asarray(sample_index).reshape(-1)
    keep = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    cams, boxes, index = cams[keep], boxes[keep], index[keep]
    ys, xs = np.arange(h), np.arange(w)
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # [k, H]
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # [k, W]
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # [k, H, W]
    total = cams.sum(axis=(2, 3))
    inside = (cams * mask[:, None]).sum(axis=(2, 3))
    peak = cams.reshape(len(keep), s, -1).argmax(axis=2)
    hit = np.take_along_axis(mask.reshape(len(keep), 1, -1), peak[:, :, None], axis=2)[:, :, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        energy = np.where(total > 0, inside / total, np.nan)
    return pd.DataFrame(
        {
            "image": np.repeat(keep, s),
            "sample_index": np.repeat(index, s),
            "truncate_dim": np.tile(np.asarray(sizes), len(keep)),
            "energy_in_box": energy.reshape(-1),
            "box_area_fraction": np.repeat(mask.mean(axis=(1, 2)), s),
            "pointing_hit": hit.reshape(-1),
        }
    )


def cam_rank_similarity(
    cams: np.ndarray,
    sizes: Sequence[int],
    *,
    reference: int | None = None,
    sample_index: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Spearman correlation of each size's CAM with the ``reference`` size's (default the largest).

    One row per image × size: ``image, sample_index, truncate_dim, reference_dim,
    spearman``; NaN where either map is constant.
    """
    cams = _check_cams(cams, sizes)
    sizes = [int(m) for m in sizes]
    ref = max(sizes) if reference is None else int(reference)
    if ref not in sizes:
        raise ValueError(f"reference size {ref} is not one of the CAM sizes {sizes}")
    n, s = cams.shape[:2]
    index = np.arange(n) if sample_index is None else np.asarray(sample_index).reshape(-1)
    ranks = rankdata(cams.reshape(n, s, -1), axis=2)
    ranks -= ranks.mean(axis=2, keepdims=True)
    ref_ranks = ranks[:, sizes.index(ref)][:, None]
    num = (ranks * ref_ranks).sum(axis=2)
    den = np.sqrt((ranks**2).sum(axis=2) * (ref_ranks**2).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / den, np.nan)
    return pd.DataFrame(
        {
            "image": np.repeat(np.arange(n), s),
            "sample_index": np.repeat(index, s),
            "truncate_dim": np.tile(np.asarray(sizes), n),
            "reference_dim": ref,
            "spearman": rho.reshape(-1),
        }
    )


def cam_metric_summary(table: pd.DataFrame, metrics: Sequence[str], **labels: Any) -> pd.DataFrame:
    """Mean, standard error and count of ``metrics`` per size: one row per size × metric.

    ``labels`` become constant columns (e.g. ``model="MRL"``).
    """
    missing = [m for m in ["truncate_dim", *metrics] if m not in table.columns]
    if missing:
        raise ValueError(f"table has no columns {missing}; it has {list(table.columns)}")
    long = table.melt(id_vars="truncate_dim", value_vars=list(metrics), var_name="metric")
    long["value"] = long["value"].astype(float)
    out = (
        long.groupby(["truncate_dim", "metric"], sort=True)["value"]
        .agg(mean="mean", sem="sem", n="count")
        .reset_index()
    )
    for key, value in labels.items():
        out.insert(0, key, value)
    return out


# ---------------------------------------------------------------------- figures


def cam_summary_figure(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """Mean ± standard error per size of a :func:`cam_metric_summary` table, one panel per
    metric (log-scaled size axis)."""
    needed = {"truncate_dim", "metric", "mean", "sem"}
    if not needed <= set(summary.columns):
        raise ValueError(
            f"not a cam_metric_summary table: it lacks {sorted(needed - set(summary))}"
        )
    color = "model" if "model" in summary.columns else None
    fig = px.line(
        summary,
        x="truncate_dim",
        y="mean",
        error_y="sem",
        color=color,
        facet_col="metric",
        markers=True,
        log_x=True,
        labels={"truncate_dim": "size m", "mean": "mean over images"},
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(tickvals=sorted(summary["truncate_dim"].unique()))
    fig.update_layout(title=title)
    return fig


def image_to_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A model-ready ``[C, H, W]`` tensor as a displayable float ``[H, W, 3]`` in [0, 1].

    Min-max scaled per image, so it works whatever normalization the transform applied.
    """
    x = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else image
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image must be [C, H, W] with C = 1 or 3, got {x.shape}")
    x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    lo, hi = x.min(), x.max()
    return np.transpose((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x), (1, 2, 0))


def overlay_cam(
    image: torch.Tensor | np.ndarray, cam: np.ndarray, *, image_weight: float = 0.5
) -> np.ndarray:
    """The CAM as a JET heat map blended over the image: uint8 ``[H, W, 3]`` RGB."""
    rgb = image_to_rgb(image)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"cam {cam.shape} and image {rgb.shape[:2]} differ in size")
    return show_cam_on_image(rgb, np.clip(cam, 0, 1), use_rgb=True, image_weight=image_weight)


def _upscale(rgb: np.ndarray, min_pixels: int) -> np.ndarray:
    factor = max(1, math.ceil(min_pixels / max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def cam_grid_figure(
    images: torch.Tensor | np.ndarray,
    result: SizeCams,
    class_names: Sequence[str] | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    panel_pixels: int = 140,
    title: str | None = None,
) -> go.Figure:
    """Figure 9 layout: rows = images, columns = sizes, CAM over the image.

    Each panel is titled with the size and the prediction there, green with ✓ when it is
    right and red with ✗ when wrong (black without labels). ``images [n, C, H, W]`` are
    the tensors the CAMs were computed on.
    """
    n, s = result.cams.shape[:2]
    if len(images) != n:
        raise ValueError(f"{len(images)} images for CAMs of {n} images")
    table = result.table.sort_values(["image", "truncate_dim"], kind="stable")
    order = {m: j for j, m in enumerate(result.sizes)}
    cells = table.assign(col=table["truncate_dim"].map(order)).sort_values(["image", "col"])
    names = class_names or [str(c) for c in range(int(cells["predicted"].max()) + 1)]

    titles, colors = [], []
    for row in cells.itertuples():
        known = row.label >= 0
        mark = (" ✓" if row.correct else " ✗") if known else ""
        titles.append(f"m={row.truncate_dim}: {_short(names[row.predicted])}{mark}")
        colors.append(("#1a7f37" if row.correct else "#cf222e") if known else "#24292f")
    fig = make_subplots(
        rows=n,
        cols=s,
        subplot_titles=titles,
        horizontal_spacing=0.01,
        vertical_spacing=min(0.06, 0.3 / max(n - 1, 1)),
    )
    for i in range(n):
        for j in range(s):
            rgb = _upscale(overlay_cam(images[i], result.cams[i, j]), 112)
            fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=i + 1, col=j + 1)
    for annotation, color in zip(fig.layout.annotations, colors, strict=True):
        annotation.font = {"size": 11, "color": color}
    fig.update_xaxes(visible=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    if row_labels is not None:
        for i, label in enumerate(row_labels):
            fig.update_yaxes(title_text=label, title_font={"size": 10}, row=i + 1, col=1)
    fig.update_layout(
        width=max(400, panel_pixels * s + 120),
        height=panel_pixels * n + 80,
        margin={"l": 110 if row_labels is not None else 10, "r": 10, "t": 60, "b": 10},
        title=title or f"{result.method} per size (layer {result.target_layer})",
        title_font={"size": 13},
    )
    return fig
