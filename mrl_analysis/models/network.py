"""Matryoshka models: a torchvision backbone plus an MRL, MRL-E or FF-k head.

Every model returned by this module (and by :func:`mrl_analysis.load_model`) has

* ``.nesting``: the list of representation sizes ``m`` it has heads for
  (``matryoshka_dims`` in sentence-transformers' words);
* ``.embed(x)``: pooled backbone features ``[N, d]`` (the full ``d``);
* ``forward(x)``: logits stacked ``[len(nesting), N, num_classes]``
  (an FF-k model has a single row).

Head parameter names follow the authors' released code (``fc.nesting_classifier_{i}``)
so their checkpoints map onto ours without renaming heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torchvision
from torch import nn

from mrl_analysis.core.checks import check_choice, check_int, check_nesting
from mrl_analysis.core.kinds import HeadKind, check_kind

Stem = Literal["imagenet", "small"]


def default_nesting(feature_dim: int, smallest: int = 1) -> list[int]:
    """Powers of two from ``smallest`` up to ``feature_dim`` (included even if not a power).

    >>> default_nesting(2048, 8)
    [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    """
    feature_dim = check_int(feature_dim, "feature_dim", low=1)
    sizes, m = [], check_int(smallest, "smallest", low=1)
    while m < feature_dim:
        sizes.append(m)
        m *= 2
    return [*sizes, feature_dim]


class MRLHead(nn.Module):
    """One linear classifier per nesting size ``m``, applied to ``features[:, :m]``."""

    def __init__(self, nesting: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.nesting = check_nesting(nesting)
        num_classes = check_int(num_classes, "num_classes", low=1)
        for i, m in enumerate(self.nesting):
            setattr(self, f"nesting_classifier_{i}", nn.Linear(m, num_classes))

    def classifiers(self) -> list[nn.Linear]:
        return [getattr(self, f"nesting_classifier_{i}") for i in range(len(self.nesting))]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [clf(features[:, :m]) for m, clf in zip(self.nesting, self.classifiers(), strict=True)]
        )


class MRLEHead(nn.Module):
    """One shared classifier whose first ``m`` columns give the logits at size ``m``.

    Because the weight is shared, :meth:`logits_at` works at *any* size
    ``1 <= m <= d``, not only the trained ones (interpolation, paper Fig. 5).
    """

    def __init__(self, nesting: Sequence[int], num_classes: int, feature_dim: int) -> None:
        super().__init__()
        feature_dim = check_int(feature_dim, "feature_dim", low=1)
        self.nesting = check_nesting(nesting, feature_dim)
        num_classes = check_int(num_classes, "num_classes", low=1)
        self.nesting_classifier_0 = nn.Linear(feature_dim, num_classes)

    def logits_at(self, features: torch.Tensor, truncate_dim: int) -> torch.Tensor:
        clf = self.nesting_classifier_0
        m = check_int(truncate_dim, "truncate_dim", low=1, high=clf.in_features)
        return features[:, :m] @ clf.weight[:, :m].T + clf.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.logits_at(features, m) for m in self.nesting])


class FFHead(nn.Linear):
    """Fixed-feature baseline: a k-dim representation (the first k pooled features)."""

    def __init__(self, k: int, num_classes: int) -> None:
        k = check_int(k, "ff_dim", low=1)
        super().__init__(k, check_int(num_classes, "num_classes", low=1))
        self.nesting = [k]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features[:, : self.in_features]).unsqueeze(0)


def build_backbone(
    arch: str, *, in_channels: int = 3, stem: Stem = "imagenet"
) -> tuple[nn.Module, int]:
    """A torchvision classification model with its classifier removed.

    Returns ``(backbone, feature_dim)``; ``feature_dim`` is read from the model's own
    last linear layer, so any torchvision classifier works. ``stem="small"`` swaps a
    ResNet's 7x7/stride-2 conv and max-pool for a 3x3/stride-1 conv (CIFAR-style), which
    keeps spatial resolution for 28-64 px images at ~15x the compute.
    """
    in_channels = check_int(in_channels, "in_channels", low=1)
    check_choice(stem, ("imagenet", "small"), "stem")
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"unknown backbone {arch!r}: use a torchvision classification model name, "
            f"e.g. resnet18, resnet50 (all: {', '.join(sorted(available))})"
        )
    model = torchvision.models.get_model(arch, weights=None)
    feature_dim = _strip_classifier(model, arch)
    if in_channels != 3 or stem == "small":
        _replace_stem(model, arch, in_channels=in_channels, small=stem == "small")
    return model, feature_dim


def _strip_classifier(model: nn.Module, arch: str) -> int:
    for attr in ("fc", "classifier", "head", "heads"):
        layer = getattr(model, attr, None)
        if layer is None:
            continue
        if isinstance(layer, nn.Linear):
            setattr(model, attr, nn.Identity())
            return layer.in_features
        if isinstance(layer, nn.Sequential):
            linears = [i for i, mod in enumerate(layer) if isinstance(mod, nn.Linear)]
            if linears:
                last = linears[-1]
                dim = layer[last].in_features
                layer[last] = nn.Identity()
                return dim
    raise ValueError(f"cannot find the final linear classifier of {arch!r}")


def _replace_stem(model: nn.Module, arch: str, *, in_channels: int, small: bool) -> None:
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        if small:
            raise ValueError(f"stem='small' is only defined for ResNet-style models, not {arch!r}")
        # Other families: swap only the input channels of the first conv.
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv2d):
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                setattr(
                    parent,
                    name.rsplit(".", 1)[-1],
                    nn.Conv2d(
                        in_channels,
                        mod.out_channels,
                        mod.kernel_size,
                        mod.stride,
                        mod.padding,
                        bias=mod.bias is not None,
                    ),
                )
                return
        raise ValueError(f"no Conv2d found in {arch!r}")
    if small:
        model.conv1 = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
        )


class MatryoshkaModel(nn.Module):
    """Backbone + Matryoshka head. See the module docstring for the public contract."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        kind: HeadKind,
        feature_dim: int,
        num_classes: int,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = head
        self.kind = kind
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.nesting: list[int] = list(head.nesting)
        self.config: dict = dict(config or {})
        self.class_names: list[str] | None = None
        self.transform = None
        self.meta: dict = {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[N, d]``."""
        return torch.flatten(self.backbone(x), 1)

    def logits_at(self, features: torch.Tensor, truncate_dim: int) -> torch.Tensor:
        """Logits ``[N, C]`` of the head for size ``truncate_dim`` from pooled features.

        MRL and FF accept their trained sizes; MRL-E accepts any ``1 <= m <= d``.
        """
        m = check_int(truncate_dim, "truncate_dim", low=1, high=self.feature_dim)
        if self.kind == "mrl-e":
            return self.fc.logits_at(features, m)
        if m not in self.nesting:
            raise ValueError(
                f"a {self.kind} model has heads only for sizes {self.nesting}, not {m} "
                "(only MRL-E can classify at sizes between the trained ones)"
            )
        return self.fc(features)[self.nesting.index(m)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def build_model(
    arch: str,
    num_classes: int,
    kind: HeadKind = "mrl",
    nesting: Sequence[int] | None = None,
    *,
    ff_dim: int | None = None,
    in_channels: int = 3,
    stem: Stem = "imagenet",
) -> MatryoshkaModel:
    """Build an untrained MRL / MRL-E / FF-k model on a torchvision backbone.

    ``nesting`` defaults to powers of two up to the feature dim (from 8 for d >= 1024,
    from 1 otherwise); ``ff_dim`` (FF only) defaults to the full feature dim.
    """
    check_kind(kind)
    num_classes = check_int(num_classes, "num_classes", low=1)
    backbone, d = build_backbone(arch, in_channels=in_channels, stem=stem)
    if kind == "ff":
        if ff_dim is not None:
            k = check_int(ff_dim, "ff_dim", low=1, high=d)
        else:
            k = check_nesting(nesting, d)[-1] if nesting is not None else d
        head: nn.Module = FFHead(k, num_classes)
    else:
        if nesting is None:
            nesting = default_nesting(d, 8 if d >= 1024 else 1)
        sizes = check_nesting(nesting, d)
        head = MRLHead(sizes, num_classes) if kind == "mrl" else MRLEHead(sizes, num_classes, d)
    config = {
        "arch": arch,
        "kind": kind,
        "nesting": list(head.nesting),
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": stem,
    }
    return MatryoshkaModel(
        backbone, head, kind=kind, feature_dim=d, num_classes=num_classes, config=config
    )
