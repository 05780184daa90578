"""A dataset decoded once into a uint8 tensor, and its transform applied a batch at a time.

Training reads every image once per epoch and per model; decoding a JPEG and running the
per-image ``torchvision.transforms.v2`` pipeline in Python costs ~1 ms per Tiny-ImageNet
image on one core, as much as a small network's training step spends on it. Here the
images are decoded once (:func:`decode_images`; the files' own loader, so the pixels are
those the per-image path sees) and kept in memory for the process, and the dataset's
transform is turned into a batched equivalent (:class:`BatchTransform`) that draws its
random crops and flips per image from an explicit generator (reproducible epochs).

Only what fits is decoded: images of one shape whose ``[N, C, H, W]`` uint8 tensor stays
under ``max_bytes``; anything else (ImageNet-sized data, mixed sizes, transforms this module
does not know) returns None and the caller keeps the per-image ``DataLoader``.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from mrl_analysis.data.bundle import ImageFileDataset, TensorImageDataset, load_image

#: Largest decoded split kept in memory (bytes of uint8 pixels): Tiny-ImageNet's full train
#: split (100k images) is 1.2 GB, ImageNet's 190 GB.
MAX_DECODED_BYTES = 2 << 30

#: Decoded file-backed splits kept per process (train and eval of one dataset).
_MEMO_ENTRIES = 2
_memo: OrderedDict[str, tuple[dict[str, int], torch.Tensor]] = OrderedDict()


@dataclass(frozen=True)
class DecodedImages:
    """``images[i]`` (uint8 ``[C, H, W]``) is sample ``i`` before its transform."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def decode_images(dataset: Dataset, *, max_bytes: int = MAX_DECODED_BYTES) -> DecodedImages | None:
    """``dataset``'s raw images (before its transform) as one uint8 tensor, or None.

    Understands the registry's datasets (:class:`TensorImageDataset`,
    :class:`ImageFileDataset`) and ``Subset`` views of them. File-backed images are decoded
    with the dataset's own loader on every core and remembered for the process, so the next
    model trained on the same files (or on a class subset of them) decodes nothing.
    """
    indices: np.ndarray | None = None
    while isinstance(dataset, Subset):
        picked = np.asarray(dataset.indices, dtype=np.int64)
        indices = picked if indices is None else picked[indices]
        dataset = dataset.dataset
    if isinstance(dataset, TensorImageDataset):
        images = dataset.images
        if images.dtype != torch.uint8 or images.dim() != 4:
            return None
        if images.element_size() * images[0].numel() * len(dataset) > max_bytes:
            return None
        targets = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    elif isinstance(dataset, ImageFileDataset):
        files = list(dataset.files)
        if indices is not None:
            files, indices = [files[i] for i in indices], None
        images = _decode_files(dataset.root, files, max_bytes)
        if images is None:
            return None
        targets = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    else:
        return None
    if indices is not None:
        pick = torch.from_numpy(indices)
        images, targets = images[pick], targets[pick]
    return DecodedImages(images, targets)


def _decode_files(root: os.PathLike, files: Sequence[str], max_bytes: int) -> torch.Tensor | None:
    """The files under ``root`` as ``[N, C, H, W]`` uint8, from memory when decoded before."""
    if not files:
        return None
    key = str(root)
    if key in _memo:
        index, stored = _memo[key]
        if all(f in index for f in files):
            _memo.move_to_end(key)
            return stored[torch.as_tensor([index[f] for f in files], dtype=torch.int64)]
    first = _to_tensor(load_image(os.path.join(root, files[0])))
    if first.numel() * len(files) > max_bytes:
        return None
    out = torch.empty((len(files), *first.shape), dtype=torch.uint8)

    def decode(i: int) -> bool:
        image = _to_tensor(load_image(os.path.join(root, files[i])))
        if image.shape != first.shape:
            return False
        out[i] = image
        return True

    # PIL releases the GIL while decoding: threads use every core without copying images.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        if not all(pool.map(decode, range(len(files)), chunksize=256)):
            return None  # mixed image sizes: the per-image path resizes them
    _memo[key] = ({f: i for i, f in enumerate(files)}, out)
    _memo.move_to_end(key)
    while len(_memo) > _MEMO_ENTRIES:
        _memo.popitem(last=False)
    return out


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def forget_decoded() -> None:
    """Drop the decoded images this process remembers (to free their memory)."""
    _memo.clear()


# --------------------------------------------------------------------------- transforms


class _Op:
    """One batched step: ``op(x, generator) -> x``."""

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


class _ToFloat(_Op):
    """uint8 ``[0, 255]`` (or a float resampling of it) to float ``[0, 1]``."""

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        # torchvision's exact arithmetic (to_dtype_image), so evaluation inputs match bit for bit.
        if x.is_floating_point():
            return x.mul_(1.0 / 255.0)
        return x.to(torch.float32).mul_(1.0 / 255.0)


class _Normalize(_Op):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return x.sub(self.mean).div_(self.std)


class _Flip(_Op):
    """A horizontal flip of each image with probability ``p`` (when no crop absorbs it)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        flip = torch.flatnonzero(torch.rand(len(x), generator=g) < self.p)
        x = x.clone()
        x[flip] = x[flip].flip(-1)
        return x


class _Crop(_Op):
    """``RandomCrop`` with constant zero padding; a flip, when absorbed, mirrors the columns.

    Flipping before or after a crop whose offset is uniform gives the same distribution of
    outputs, so one gather does both.
    """

    def __init__(self, size: tuple[int, int], padding: Sequence[int]) -> None:
        self.size = size
        pad = list(padding)
        if len(pad) == 1:
            pad *= 4
        elif len(pad) == 2:
            pad = [pad[0], pad[1], pad[0], pad[1]]
        self.padding = pad  # torchvision's order: left, top, right, bottom
        self.flip_p = 0.0

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        left, top, right, bottom = self.padding
        padded = F.pad(x, (left, right, top, bottom))
        n, c, h, w = padded.shape
        height, width = self.size
        if h < height or w < width:
            raise ValueError(f"RandomCrop {height}x{width} is larger than the padded {h}x{w}")
        i = torch.randint(0, h - height + 1, (n,), generator=g)
        j = torch.randint(0, w - width + 1, (n,), generator=g)
        step = torch.arange(width)
        flip = torch.rand(n, generator=g) < self.flip_p
        cols = j[:, None] + torch.where(flip[:, None], width - 1 - step, step)
        rows = i[:, None] + torch.arange(height)
        batch = torch.arange(n)[:, None, None, None]
        return padded[
            batch,
            torch.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]


class _ResizedCrop(_Op):
    """``RandomResizedCrop`` (bilinear) as one ``grid_sample``; an absorbed flip negates the
    horizontal scale of the sampling grid."""

    def __init__(
        self, size: tuple[int, int], scale: Sequence[float], ratio: Sequence[float]
    ) -> None:
        self.size = size
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.flip_p = 0.0

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, _, height, width = x.shape
        top, left, h, w = _crop_boxes(n, height, width, self.scale, self.log_ratio, g)
        flip = torch.rand(n, generator=g).numpy() < self.flip_p
        out_h, out_w = self.size
        # Box -> grid_sample's [-1, 1] coordinates (align_corners=False): output pixel centres
        # land where a bilinear resize of the box puts them. The grid is separable: its two
        # [n, side] factors are computed in numpy and broadcast (affine_grid's batched matrix
        # product is ~3x slower on CPU).
        u = (2 * np.arange(out_w, dtype=np.float32) + 1) / out_w - 1
        v = (2 * np.arange(out_h, dtype=np.float32) + 1) / out_h - 1
        gx = np.where(flip, -w, w)[:, None] / width * u + ((2 * left + w) / width - 1)[:, None]
        gy = (h / height)[:, None] * v + ((2 * top + h) / height - 1)[:, None]
        grid = torch.stack(
            (
                torch.from_numpy(gx.astype(np.float32))[:, None, :].expand(n, out_h, out_w),
                torch.from_numpy(gy.astype(np.float32))[:, :, None].expand(n, out_h, out_w),
            ),
            -1,
        )
        # Sampled in float and kept there: rounding back to uint8 (as torchvision does on uint8
        # input) would only add work and quantization noise before ToDtype.
        source = x if x.is_floating_point() else x.to(torch.float32)
        return F.grid_sample(
            source, grid, mode="bilinear", padding_mode="border", align_corners=False
        )


def _crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    log_ratio: tuple[float, float],
    g: torch.Generator | None,
    tries: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``RandomResizedCrop``'s boxes ``(top, left, height, width)`` for ``n`` images: up to
    ``tries`` draws of area and aspect each, the first that fits, else the centred fallback."""
    # Random numbers from the torch generator (reproducible epochs), arithmetic in numpy:
    # torch parallelises even tiny element-wise ops, which stalls on a busy 2-core machine.
    draws = torch.rand(n, 2 * tries + 2, generator=g, dtype=torch.float64).numpy()
    target = height * width * (scale[0] + (scale[1] - scale[0]) * draws[:, :tries])
    aspect = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[:, tries : 2 * tries])
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.argmax(axis=1)
    rows = np.arange(n)
    w, h, found = w[rows, first], h[rows, first], ok.any(axis=1)
    # torchvision's fallback: the whole image, its aspect clamped to the ratio range.
    in_ratio = width / height
    lo, hi = math.exp(log_ratio[0]), math.exp(log_ratio[1])
    if in_ratio < lo:
        fw, fh = width, round(width / lo)
    elif in_ratio > hi:
        fw, fh = round(height * hi), height
    else:
        fw, fh = width, height
    w = np.where(found, w, fw)
    h = np.where(found, h, fh)
    top = np.where(found, np.floor(draws[:, -2] * (height - h + 1)), (height - h) // 2)
    left = np.where(found, np.floor(draws[:, -1] * (width - w + 1)), (width - w) // 2)
    return top, left, h, w


def _pair(size: Sequence[int] | int) -> tuple[int, int]:
    values = [int(size)] if isinstance(size, int) else [int(s) for s in size]
    return (values[0], values[-1])


class BatchTransform:
    """A per-image ``v2.Compose`` applied to a whole uint8 batch ``[B, C, H, W]``.

    Random crops and flips are drawn per image, as the per-image pipeline draws them, from
    the ``generator`` given at each call. Supported steps: ``RandomHorizontalFlip``,
    ``RandomCrop`` (constant zero fill), ``RandomResizedCrop`` (bilinear, as
    ``grid_sample``: no antialiasing when it shrinks), ``CenterCrop`` / ``Resize`` that keep
    the size, ``ToImage``, ``ToDtype(float32, scale=True)``, ``Normalize``,
    ``ToPureTensor``. Deterministic pipelines give exactly the per-image result. Build it
    with :meth:`from_transform`, which returns None for anything else.
    """

    def __init__(self, ops: Sequence[_Op]) -> None:
        self.ops = list(ops)

    @classmethod
    def from_transform(
        cls, transform: Callable | None, image_shape: Sequence[int]
    ) -> BatchTransform | None:
        """The batched equivalent of ``transform`` for images of ``image_shape`` ``(C, H,
        W)``, or None when a step is not supported."""
        if transform is None:
            return None
        steps = list(transform.transforms) if isinstance(transform, v2.Compose) else [transform]
        ops: list[_Op] = []
        size = (int(image_shape[-2]), int(image_shape[-1]))
        scaled = False
        flip: float | None = None  # a flip waiting for the next crop to absorb it
        for step in steps:
            if isinstance(step, v2.ToImage | v2.ToPureTensor):
                continue
            if isinstance(step, v2.RandomHorizontalFlip):
                last = ops[-1] if ops else None
                if isinstance(last, _Crop | _ResizedCrop) and last.flip_p == 0 and flip is None:
                    last.flip_p = float(step.p)
                elif flip is None:
                    flip = float(step.p)
                else:
                    return None
                continue
            if isinstance(step, v2.ToDtype):
                if step.dtype is not torch.float32 or not step.scale or scaled:
                    return None
                op: _Op = _ToFloat()
                scaled = True
            elif isinstance(step, v2.Normalize):
                if not scaled:
                    return None
                op = _Normalize(step.mean, step.std)
            elif isinstance(step, v2.RandomCrop):
                fill = step.fill if isinstance(step.fill, int | float) else None
                if step.padding_mode != "constant" or step.pad_if_needed or fill != 0:
                    return None
                op = _Crop(_pair(step.size), step.padding or [0])
                size = _pair(step.size)
            elif isinstance(step, v2.RandomResizedCrop):
                mode = getattr(step.interpolation, "value", step.interpolation)
                if mode != "bilinear":
                    return None
                op = _ResizedCrop(_pair(step.size), step.scale, step.ratio)
                size = _pair(step.size)
            elif isinstance(step, v2.CenterCrop | v2.Resize):
                if step.size is None or _pair(step.size) != size:
                    return None
                continue
            else:
                return None
            if flip is not None and isinstance(op, _Crop | _ResizedCrop):
                op.flip_p, flip = flip, None
            elif flip is not None:
                ops.append(_Flip(flip))
                flip = None
            ops.append(op)
        if flip is not None:
            ops.append(_Flip(flip))
        if not scaled:
            return None
        return cls(ops)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = images
        for op in self.ops:
            x = op(x, generator)
        return x.contiguous()


def iterate_batches(
    data: DecodedImages,
    indices: torch.Tensor,
    batch_size: int,
    transform: BatchTransform,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(transformed images, labels)`` of ``data[indices]``, ``batch_size`` at a time."""
    for start in range(0, len(indices), batch_size):
        pick = indices[start : start + batch_size]
        yield transform(data.images[pick], generator), data.targets[pick]
