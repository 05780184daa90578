"""The Matryoshka cross-entropy loss (paper Eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mrl_analysis.core.checks import check_finite


class MatryoshkaCELoss(nn.Module):
    """Sum over nesting sizes of ``c_m * CE(logits_m, y)``.

    ``logits`` are stacked ``[G, N, C]`` (one row per nesting size, as every model here
    returns them); ``relative_importance`` holds the ``c_m`` (all ones, as in the paper,
    when omitted).
    """

    def __init__(self, relative_importance: Sequence[float] | None = None, **ce_kwargs) -> None:
        super().__init__()
        weights = None
        if relative_importance is not None:
            values = check_finite(
                np.asarray(relative_importance, dtype=np.float64), "relative_importance"
            )
            if values.ndim != 1 or values.size == 0 or (values < 0).any():
                raise ValueError(
                    "relative_importance must be one non-negative weight c_m per nesting size, "
                    f"got {relative_importance!r}"
                )
            weights = torch.as_tensor(values, dtype=torch.float32)
        self.register_buffer("relative_importance", weights, persistent=False)
        self.ce_kwargs = ce_kwargs

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"expected stacked logits [G, N, C], got shape {tuple(logits.shape)}")
        g, n, c = logits.shape
        if target.shape != (n,) or target.is_floating_point():
            raise ValueError(
                f"expected one integer class index per sample, shape ({n},), got "
                f"{target.dtype} {tuple(target.shape)}"
            )
        per_size = (
            F.cross_entropy(
                logits.reshape(g * n, c), target.repeat(g), reduction="none", **self.ce_kwargs
            )
            .view(g, n)
            .mean(dim=1)
        )
        if self.relative_importance is None:
            return per_size.sum()
        if self.relative_importance.numel() != g:
            raise ValueError(
                f"relative_importance has {self.relative_importance.numel()} weights "
                f"for {g} nesting sizes"
            )
        return (self.relative_importance.to(per_size) * per_size).sum()
