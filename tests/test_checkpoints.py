"""Checkpoints: our format round-trips; the authors' ResNet50 layouts load and match golden."""

from __future__ import annotations

import functools
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mrl_analysis.models.checkpoints import (
    BlurPoolConv2d,
    apply_blurpool,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from mrl_analysis.models.network import build_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official-checkpoints"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "golden_r50_outputs.pt").is_file(),
    reason=f"official checkpoint fixtures not found at {FIXTURES}",
)
NESTING_R50 = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]


# --------------------------------------------------------------------------- our format


def _small_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, kind, [4, 16, 512] if kind != "ff" else [32], in_channels=1)
    # Non-default BatchNorm statistics, so a round trip that dropped buffers would show.
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand_like(buf) + 0.5)
    model.class_names = [f"class {i}" for i in range(10)]
    model.meta = {"metrics": {"4": 51.5}, "history": [{"epoch": 1, "loss": 0.5}]}
    return model.eval()


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        features = model.embed(x)
        return features, model.fc(features)


X28 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("kind", "suffix"), [("mrl", ".pt"), ("mrl-e", ".pt"), ("ff", ".pt"), ("mrl-e", ".safetensors")]
)
def test_round_trip_gives_identical_outputs(tmp_path, kind, suffix):
    model = _small_model(kind)
    path = save_checkpoint(tmp_path / f"model{suffix}", model)
    loaded = load_model(path)

    assert not loaded.training
    assert (loaded.kind, loaded.nesting) == (model.kind, model.nesting)
    assert loaded.class_names == model.class_names
    assert loaded.meta == model.meta
    assert loaded.config == model.config
    for a, b in zip(_outputs(model, X28), _outputs(loaded, X28), strict=True):
        assert torch.equal(a, b)


def test_pt_file_holds_documented_format_and_train_state(tmp_path):
    model = _small_model("mrl")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(X28).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5)
    train_state = {"epoch": 3, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    path = save_checkpoint(
        tmp_path / "run.pt", model, class_names=list("abcdefghij"), train_state=train_state
    )

    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "config", "state_dict", "class_names", "meta", "train_state"}
    assert raw["format"] == "mrl-analysis/1"
    assert raw["config"]["nesting"] == [4, 16, 512]
    assert raw["class_names"] == list("abcdefghij")
    assert raw["train_state"]["epoch"] == 3
    assert load_checkpoint(path)["train_state"]["scheduler"] == sched.state_dict()
    opt.load_state_dict(raw["train_state"]["optimizer"])


def test_safetensors_header_and_no_train_state(tmp_path):
    from safetensors import safe_open

    model = _small_model("mrl-e")
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    with safe_open(path, framework="pt") as f:
        header = f.metadata()
    assert header["format"] == "mrl-analysis/1"
    assert json.loads(header["config"])["kind"] == "mrl-e"
    assert json.loads(header["class_names"]) == model.class_names
    assert set(load_checkpoint(path)) == {"format", "config", "state_dict", "class_names", "meta"}

    with pytest.raises(ValueError, match="train_state"):
        save_checkpoint(tmp_path / "t.safetensors", model, train_state={"epoch": 1})
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "j.safetensors", model, meta={"when": object()})


def test_failing_save_leaves_existing_checkpoint_intact(tmp_path):
    model = _small_model("mrl")
    path = save_checkpoint(tmp_path / "model.pt", model)
    before = path.read_bytes()

    # Pickling fails part-way through torch.save (a direct write would have truncated it).
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(path, _small_model("mrl", seed=1), meta={"hook": lambda: None})
    # torch.save accepts numpy scalars, but weights_only loading would not.
    with pytest.raises(ValueError, match="weights_only.*numpy"):
        save_checkpoint(path, _small_model("mrl", seed=1), meta={"acc": np.float64(0.5)})

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    for a, b in zip(_outputs(model, X28), _outputs(load_model(path), X28), strict=True):
        assert torch.equal(a, b)


def test_wrong_class_count_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _small_model("mrl"))
    with pytest.raises(ValueError, match="shape mismatches") as err:
        load_model(path, num_classes=5)
    msg = str(err.value)
    assert "fc.nesting_classifier_0.weight: checkpoint (10, 4) vs model (5, 4)" in msg
    assert "10 classes" in msg  # what the checkpoint seems to be


def test_wrong_nesting_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _small_model("mrl"))
    with pytest.raises(ValueError) as err:
        load_model(path, nesting=[4, 16, 64, 512])
    msg = str(err.value)
    assert "missing keys (2): fc.nesting_classifier_3.weight" in msg
    assert "head widths [4, 16, 512]" in msg

    with pytest.raises(ValueError, match="unexpected keys"):
        load_model(path, kind="mrl-e")


def test_mrl_e_loads_at_any_nesting(tmp_path):
    model = _small_model("mrl-e")
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(path, nesting=[3, 100, 512])
    with torch.no_grad():
        feats = loaded.embed(X28)
        logits = loaded(X28)
        assert logits.shape == (3, 3, 10)
        assert torch.allclose(logits[1], model.logits_at(feats, 100))


def test_blurpool_model_round_trips(tmp_path):
    model = _small_model("mrl")
    apply_blurpool(model.backbone)
    model.config["blurpool"] = True
    loaded = load_model(save_checkpoint(tmp_path / "b.pt", model))
    assert sum(isinstance(m, BlurPoolConv2d) for m in loaded.modules()) == 6
    for a, b in zip(_outputs(model, X28), _outputs(loaded, X28), strict=True):
        assert torch.equal(a, b)


_UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    _UNPICKLED.append("ran")
    return "payload"


class _Payload:
    def __reduce__(self):
        return (_mark_unpickled, ())


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "mrl-analysis/1", "meta": _Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load .*_mark_unpickled"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_model(path)
    assert _UNPICKLED == []


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(junk)
    with pytest.raises(ValueError, match="unknown kind"):
        load_model(junk, kind="matryoshka")
    with pytest.raises(ValueError, match="MatryoshkaModel"):
        save_checkpoint(tmp_path / "x.pt", nn.Linear(2, 2))


def test_transform_comes_from_the_dataset_registry(tmp_path):
    from mrl_analysis.data.datasets import get_eval_transform

    model = _small_model("ff")
    model.meta = {"dataset": "fashion-mnist"}
    loaded = load_model(save_checkpoint(tmp_path / "m.pt", model))
    assert repr(loaded.transform) == repr(get_eval_transform("fashion-mnist"))

    model.meta = {"dataset": "not-a-registered-dataset"}
    with pytest.warns(UserWarning, match="not-a-registered-dataset"):
        loaded = load_model(save_checkpoint(tmp_path / "m.pt", model))
    assert loaded.transform is None


# --------------------------------------------------------------------------- authors' files


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
