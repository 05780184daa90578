"""CAMs as pictures: a model-ready tensor as RGB, and a CAM blended over it (no plotly)."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.utils.image import show_cam_on_image


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
