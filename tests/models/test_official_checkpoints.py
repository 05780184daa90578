"""The authors' released ResNet50 layouts: every one loads, and outputs match golden values.

The ~100 MB state_dicts are filled here from the key / shape lists in
``../shared/fixtures/official-checkpoints`` (no released weights are needed).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mrl_analysis.models.checkpoints import load_model
from mrl_analysis.models.official import BlurPoolConv2d, apply_blurpool

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official-checkpoints"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "golden_r50_outputs.pt").is_file(),
    reason=f"official checkpoint fixtures not found at {FIXTURES}",
)
NESTING_R50 = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]


def _layout(name: str) -> dict[str, dict]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["keys"]


def _golden_fill(layout: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The authors' state_dict filled as the fixture README describes (with ``module.``)."""
    return {
        key: _golden_value(key.removeprefix("module."), t, tuple(spec["shape"]), spec["dtype"])
        for t, (key, spec) in enumerate(layout.items())
    }


@functools.cache  # the MRL and MRL-E layouts share their backbone entries
def _golden_value(name: str, t: int, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    s = torch.sin(0.7 * torch.arange(math.prod(shape), dtype=torch.float64) + t).reshape(shape)
    if name.endswith(".blur_filter"):
        blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        value = blur.repeat(shape[0], 1, 1, 1)
    elif name.endswith(".num_batches_tracked"):
        value = torch.zeros(shape)
    elif name.endswith(".running_var"):
        value = 1 + 0.5 * s.abs()
    elif name.endswith(".running_mean"):
        value = 0.05 * s
    elif len(shape) == 1 and not name.startswith("fc."):
        value = 1 + 0.1 * s if name.endswith(".weight") else 0.05 * s
    elif len(shape) == 1:
        value = 0.05 * s
    else:
        value = s * math.sqrt(3 / s[0].numel())
    return value.to(getattr(torch, dtype))


@pytest.fixture
def authors_file(tmp_path):
    """Save a state_dict under a given file name; the ~100 MB files are deleted afterwards."""
    written: list[Path] = []

    def save(name: str, state: dict[str, torch.Tensor]) -> Path:
        path = tmp_path / name
        torch.save(state, path)
        written.append(path)
        return path

    yield save
    for path in written:
        path.unlink(missing_ok=True)


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "prefix"), [("r50_mrl1_e0_ff2048", "mrl"), ("r50_mrl0_e1_ff2048", "mrl_e")]
)
def test_authors_checkpoint_reproduces_golden_outputs(authors_file, name, prefix):
    golden = torch.load(FIXTURES / "golden_r50_outputs.pt", weights_only=True)
    model = load_model(authors_file(f"{name}.pt", _golden_fill(_layout(name))))
    assert model.kind == ("mrl" if prefix == "mrl" else "mrl-e")
    assert model.nesting == NESTING_R50

    with torch.no_grad():
        features, logits = model.embed(golden["input"]), model(golden["input"])
    feature_diff = (features - golden[f"{prefix}_features"]).abs().max().item()
    logit_diff = (logits - golden[f"{prefix}_logits"]).abs().max().item()
    assert logits.shape == (9, 2, 1000)
    # Golden magnitudes are ~30; a misplaced blur or mis-sliced head is off by > 5.
    assert feature_diff < 1e-4, feature_diff
    assert logit_diff < 1e-4, logit_diff


def _fast_fill(layout: dict[str, dict]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(spec["shape"], generator=gen).to(getattr(torch, spec["dtype"]))
        for k, spec in layout.items()
    }


def _check_head(model, state: dict[str, torch.Tensor], weight: str, sizes: list[int]) -> None:
    """Logits from the loaded head equal the formula on the file's own tensors."""
    feats = torch.randn(4, 2048, generator=torch.Generator().manual_seed(2))
    w, b = state[f"module.{weight}.weight"], state[f"module.{weight}.bias"]
    with torch.no_grad():
        for m in sizes:
            expected = feats[:, :m] @ w[:, :m].T + b
            assert torch.allclose(model.logits_at(feats, m), expected, atol=1e-4)


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "kind", "nesting", "weight"),
    [
        ("r50_mrl1_e0_ff2048", "mrl", NESTING_R50, "fc.nesting_classifier_8"),
        ("r50_mrl_linear_layer_new_style", "mrl", NESTING_R50, "fc.nesting_classifier_8"),
        ("r50_mrl0_e1_ff2048", "mrl-e", NESTING_R50, "fc"),
        ("r50_mrl0_e0_ff2048", "ff", [2048], "fc"),
        ("r50_mrl0_e0_ff256", "ff", [256], "fc"),
        ("r50_mrl0_e0_ff8", "ff", [8], "fc"),
    ],
)
def test_every_authors_layout_loads(authors_file, name, kind, nesting, weight):
    layout = _layout(name)
    state = _fast_fill(layout)
    model = load_model(authors_file(f"{name}.pt", state))

    assert (model.kind, model.nesting, model.num_classes) == (kind, nesting, 1000)
    assert not model.training
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"
    assert "CenterCrop(size=(224, 224))" in repr(model.transform)
    wrapped = sorted(
        f"module.{n.removeprefix('backbone.')}.conv.weight"
        for n, m in model.named_modules()
        if isinstance(m, BlurPoolConv2d)
    )
    assert wrapped == sorted(k for k in layout if k.endswith(".conv.weight"))
    _check_head(model, state, weight, [nesting[-1]] if kind != "mrl-e" else [8, 100, 2048])


@needs_fixtures
def test_new_mrl_e_naming_without_ddp_prefix(authors_file):
    state = _fast_fill(_layout("r50_mrl0_e1_ff2048"))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state["fc.nesting_classifier_0.weight"] = state.pop("fc.weight")
    state["fc.nesting_classifier_0.bias"] = state.pop("fc.bias")
    model = load_model(authors_file("mrl_e.pt", state))
    assert (model.kind, model.nesting) == ("mrl-e", NESTING_R50)
    assert model.meta["layout"] == "MRL-E (new naming)"


@needs_fixtures
def test_ambiguous_single_head_needs_kind(authors_file):
    state = _fast_fill(_layout("r50_mrl0_e0_ff2048"))
    path = authors_file("renamed.pt", state)
    with pytest.raises(ValueError, match="kind='mrl-e' or kind='ff'"):
        load_model(path)
    assert load_model(path, kind="ff").nesting == [2048]
    mrl_e = load_model(path, kind="mrl-e")
    assert mrl_e.kind == "mrl-e"
    _check_head(mrl_e, state, "fc", [64])


@needs_fixtures
def test_authors_checkpoint_that_does_not_fit(authors_file):
    path = authors_file("r50_mrl0_e0_ff8.pt", _fast_fill(_layout("r50_mrl0_e0_ff8")))
    with pytest.raises(ValueError, match="FF-8 model, not mrl"):
        load_model(path, kind="mrl")
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(1000, 8\) vs model \(10, 8\)"):
        load_model(path, num_classes=10)
    with pytest.raises(ValueError, match="missing keys"):
        load_model(path, arch="resnet18")


@needs_fixtures
def test_blurpool_rule_wraps_the_listed_convs():
    import torchvision

    backbone = apply_blurpool(torchvision.models.resnet50())
    wrapped = sorted(
        f"module.{n}.conv.weight"
        for n, m in backbone.named_modules()
        if isinstance(m, BlurPoolConv2d)
    )
    assert wrapped == sorted(k for k in _layout("r50_mrl1_e0_ff2048") if k.endswith(".conv.weight"))


def test_blurpool_blurs_before_the_strided_conv():
    conv = nn.Conv2d(16, 4, 1, stride=2, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 16, 4, 4)
    x[..., 1, 1] = 1.0  # an impulse at an odd position a bare stride-2 conv would skip
    out = BlurPoolConv2d(conv)(x)
    assert conv(x).abs().sum() == 0
    # Blurred impulse at (0,0): weight 1/16 per channel, summed over 16 channels by the conv.
    assert torch.allclose(out[0, :, 0, 0], torch.full((4,), 1.0))
