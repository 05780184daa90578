"""MRL / MRL-E / FF heads, backbones and the Matryoshka loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mrl_analysis.models.loss import MatryoshkaCELoss
from mrl_analysis.models.network import MRLEHead, MRLHead, build_model, default_nesting


def test_default_nesting():
    assert default_nesting(2048, 8) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert default_nesting(48, 1) == [1, 2, 4, 8, 16, 32, 48]


def test_mrl_head_slices_features_per_size():
    torch.manual_seed(0)
    head = MRLHead([2, 4, 8], num_classes=3)
    feats = torch.randn(5, 8)
    out = head(feats)
    assert out.shape == (3, 5, 3)
    for i, m in enumerate([2, 4, 8]):
        clf = getattr(head, f"nesting_classifier_{i}")
        torch.testing.assert_close(out[i], feats[:, :m] @ clf.weight.T + clf.bias)
    # Changing features beyond m leaves the size-m logits untouched.
    changed = feats.clone()
    changed[:, 2:] += 10
    torch.testing.assert_close(head(changed)[0], out[0])
    assert not torch.allclose(head(changed)[1], out[1])


def test_mrl_e_head_shares_one_weight_and_interpolates():
    torch.manual_seed(0)
    head = MRLEHead([2, 8], num_classes=3, feature_dim=8)
    feats = torch.randn(4, 8)
    full = head.nesting_classifier_0(feats)
    torch.testing.assert_close(head(feats)[1], full)
    w, b = head.nesting_classifier_0.weight, head.nesting_classifier_0.bias
    torch.testing.assert_close(head.logits_at(feats, 5), feats[:, :5] @ w[:, :5].T + b)


@pytest.mark.parametrize("kind", ["mrl", "mrl-e", "ff"])
def test_model_contract(kind):
    model = build_model("resnet18", 7, kind, [1, 4, 512], ff_dim=16, in_channels=1).eval()
    x = torch.randn(3, 1, 28, 28)
    feats = model.embed(x)
    assert feats.shape == (3, 512)
    logits = model(x)
    expected_rows = 1 if kind == "ff" else 3
    assert logits.shape == (expected_rows, 3, 7)
    assert model.nesting == ([16] if kind == "ff" else [1, 4, 512])
    last = model.nesting[-1]
    torch.testing.assert_close(model.logits_at(feats, last), logits[-1])


def test_logits_at_rejects_untrained_size_except_mrl_e():
    mrl = build_model("resnet18", 3, "mrl", [2, 512], in_channels=1)
    feats = torch.randn(2, 512)
    with pytest.raises(ValueError, match="only MRL-E"):
        mrl.logits_at(feats, 3)
    mrl_e = build_model("resnet18", 3, "mrl-e", [2, 512], in_channels=1)
    assert mrl_e.logits_at(feats, 3).shape == (2, 3)


def test_feature_dim_read_from_backbone():
    assert build_model("resnet50", 10).feature_dim == 2048
    assert build_model("resnet18", 10).nesting == default_nesting(512, 1)
    assert build_model("mobilenet_v3_small", 10, "mrl", [8, 1024]).feature_dim == 1024


def test_small_stem_keeps_resolution():
    small = build_model("resnet18", 10, stem="small", in_channels=3)
    assert small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("resnet19", 10)
    with pytest.raises(ValueError, match="strictly increasing"):
        build_model("resnet18", 10, "mrl", [8, 4])
    with pytest.raises(ValueError, match="beyond the feature dimension 512"):
        build_model("resnet18", 10, "mrl", [8, 1024])
    with pytest.raises(ValueError, match="unknown head kind"):
        build_model("resnet18", 10, "mrle")  # type: ignore[arg-type]


def test_matryoshka_loss_weights_sizes():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 4)
    y = torch.randint(0, 4, (6,))
    per_size = torch.stack([F.cross_entropy(logits[g], y) for g in range(3)])
    torch.testing.assert_close(MatryoshkaCELoss()(logits, y), per_size.sum())
    c = [0.5, 1.0, 2.0]
    torch.testing.assert_close(MatryoshkaCELoss(c)(logits, y), (torch.tensor(c) * per_size).sum())
    with pytest.raises(ValueError, match="3 nesting sizes"):
        MatryoshkaCELoss([1.0, 1.0])(logits, y)
