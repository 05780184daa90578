"""The Matryoshka cross-entropy loss (paper Eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class MatryoshkaCELoss(nn.Module):
    """Sum over nesting sizes of ``c_m * CE(logits_m, y)``.

    ``logits`` are stacked ``[G, N, C]`` (one row per nesting size, as every model here
    returns them); ``relative_importance`` holds the ``c_m`` (all ones, as in the paper,
    when omitted).
    """

    def __init__(self, relative_importance: Sequence[float] | None = None, **ce_kwargs) -> None:
        super().__init__()
        weights = None if relative_importance is None else torch.as_tensor(relative_importance)
        self.register_buffer("relative_importance", weights, persistent=False)
        self.ce_kwargs = ce_kwargs

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(f"expected stacked logits [G, N, C], got shape {tuple(logits.shape)}")
        g, n, c = logits.shape
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
