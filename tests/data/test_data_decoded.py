"""Decoded datasets and batched transforms: the same pixels and the same augmentation
distribution as the per-image pipeline, at a fraction of its cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mrl_analysis.data.bundle import ImageFileDataset, TensorImageDataset
from mrl_analysis.data.decoded import (
    BatchTransform,
    decode_images,
    forget_decoded,
    iterate_batches,
)
from mrl_analysis.data.transforms import image_transforms, tensor_transforms

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def test_evaluation_transforms_match_the_per_image_pipeline_bit_for_bit():
    gray = _images(8, 1, 28)
    evaluation, _ = tensor_transforms(28, 2, (0.286,), (0.353,))
    batched = BatchTransform.from_transform(evaluation, gray.shape[1:])
    assert torch.equal(batched(gray), torch.stack([evaluation(x) for x in gray]))

    rgb = _images(8, 3, 16)
    evaluation, _ = image_transforms(16, MEAN3, STD3, None, (0.35, 1.0))
    batched = BatchTransform.from_transform(evaluation, rgb.shape[1:])
    per_image = torch.stack([evaluation(v2.functional.to_pil_image(x)) for x in rgb])
    assert torch.equal(batched(rgb), per_image)


def test_padded_random_crop_and_flip_give_exact_crops_of_the_padded_image():
    images = _images(64, 1, 6)
    _, training = tensor_transforms(6, 2, (0.0,), (1.0,))
    batched = BatchTransform.from_transform(training, images.shape[1:])
    out = batched(images, torch.Generator().manual_seed(1)) * 255
    padded = torch.nn.functional.pad(images.float(), (2, 2, 2, 2))
    flips = 0
    for x, p in zip(out, padded, strict=True):
        crops = [p[:, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        plain = any(torch.allclose(x, c) for c in crops)
        mirrored = any(torch.allclose(x, c.flip(-1)) for c in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 16 < flips < 48  # p = 0.5 of 64 images: both kinds occur


def test_resized_crop_spans_the_scale_range_and_is_the_identity_at_full_scale():
    images = _images(16, 3, 12)
    whole = v2.Compose(
        [v2.RandomResizedCrop(12, scale=(1, 1), ratio=(1, 1)), v2.ToDtype(torch.float32, True)]
    )
    batched = BatchTransform.from_transform(whole, images.shape[1:])
    torch.testing.assert_close(batched(images), images.float() / 255)

    # A horizontal ramp: a crop's output range shows its width (its share of the image).
    ramp = torch.arange(64, dtype=torch.uint8).repeat(256, 1, 64, 1) * 4
    crops = v2.Compose(
        [v2.RandomResizedCrop(64, scale=(0.25, 1.0)), v2.ToDtype(torch.float32, True)]
    )
    batched = BatchTransform.from_transform(crops, ramp.shape[1:])
    out = batched(ramp, torch.Generator().manual_seed(0)) * 255 / 4
    widths = (out[:, 0, 0, -1] - out[:, 0, 0, 0] + 1) / 64
    assert widths.min() > 0.25 - 0.05 and widths.max() <= 1.0 + 1e-6
    assert widths.min() < 0.45 and widths.max() > 0.9  # the whole range is drawn


def test_random_draws_follow_the_generator():
    images = _images(32, 3, 16)
    _, training = image_transforms(16, MEAN3, STD3, None, (0.35, 1.0))
    batched = BatchTransform.from_transform(training, images.shape[1:])
    a = batched(images, torch.Generator().manual_seed(5))
    b = batched(images, torch.Generator().manual_seed(5))
    c = batched(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "transform",
    [
        v2.Compose([v2.ColorJitter(0.4), v2.ToDtype(torch.float32, scale=True)]),
        v2.Compose([v2.Resize(8), v2.ToDtype(torch.float32, scale=True)]),
        v2.Compose([v2.RandomCrop(6, padding=1, padding_mode="reflect")]),
        v2.Compose([v2.Normalize([0.5], [0.5])]),  # uint8 input: torchvision would refuse
    ],
)
def test_unsupported_steps_fall_back_to_the_per_image_loader(transform):
    assert BatchTransform.from_transform(transform, (1, 6, 6)) is None


def test_decoded_files_equal_the_per_image_loader_and_are_remembered(tmp_path):
    forget_decoded()
    rng = np.random.default_rng(0)
    files = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        files.append(f"{i}.png")
    targets = np.arange(12) % 3
    dataset = ImageFileDataset(tmp_path, files, targets, v2.PILToTensor())
    decoded = decode_images(dataset)
    assert decoded is not None and decoded.images.dtype == torch.uint8
    assert torch.equal(decoded.images, torch.stack([dataset[i][0] for i in range(12)]))
    assert decoded.targets.tolist() == targets.tolist()

    for f in files:  # a subset of the same files is served from memory
        (tmp_path / f).unlink()
    subset = ImageFileDataset(tmp_path, files[3:7], targets[3:7], None)
    again = decode_images(subset)
    assert again is not None and torch.equal(again.images, decoded.images[3:7])
    forget_decoded()


def test_what_does_not_fit_or_mixes_sizes_is_not_decoded(tmp_path):
    images = _images(10, 1, 8)
    tensors = TensorImageDataset(images, np.zeros(10, dtype=np.int64))
    assert decode_images(tensors, max_bytes=10 * 64 - 1) is None
    assert torch.equal(decode_images(tensors).images, images)

    forget_decoded()
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "b.png")
    mixed = ImageFileDataset(tmp_path, ["a.png", "b.png"], np.zeros(2, dtype=np.int64))
    assert decode_images(mixed) is None


def test_batches_cover_the_requested_samples_in_order():
    images = _images(10, 1, 4)
    decoded = decode_images(TensorImageDataset(images, np.arange(10)))
    evaluation, _ = tensor_transforms(4, 0, (0.0,), (1.0,))
    batched = BatchTransform.from_transform(evaluation, images.shape[1:])
    order = torch.tensor([3, 1, 4, 9, 0, 2, 6])
    labels = torch.cat([y for _, y in iterate_batches(decoded, order, 3, batched)])
    assert labels.tolist() == order.tolist()
