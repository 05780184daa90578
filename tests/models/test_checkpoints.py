"""Checkpoints in our format: round trips, atomic saves, refused pickles, clear mismatches."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from mrl_analysis.models.checkpoints import (
    load_checkpoint,
    load_model,
    save_checkpoint,
    weights_sha256,
)
from mrl_analysis.models.network import build_model
from mrl_analysis.models.official import BlurPoolConv2d, apply_blurpool


def _small_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, kind, [4, 16, 512] if kind != "ff" else [32], in_channels=1)
    # Non-default BatchNorm statistics, so a round trip that dropped buffers would show.
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand_like(buf) + 0.5)
    model.class_names = [f"class {i}" for i in range(10)]
    model.meta = {"metrics": {"4": 0.515}, "history": [{"epoch": 1, "loss": 0.5}]}
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
    assert set(raw) == {
        "format",
        "config",
        "state_dict",
        "class_names",
        "meta",
        "train_state",
        "weights_sha256",
    }
    assert raw["weights_sha256"] == weights_sha256(model.state_dict())
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
    assert header["weights_sha256"] == weights_sha256(model.state_dict())
    assert set(load_checkpoint(path)) == {
        "format",
        "config",
        "state_dict",
        "class_names",
        "meta",
        "weights_sha256",
    }

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
    with pytest.raises(ValueError, match="junk.pt: it is a text file starting 'not a checkpoint'"):
        load_checkpoint(junk)
    with pytest.raises(ValueError, match="unknown head kind"):
        load_model(junk, kind="matryoshka")
    with pytest.raises(ValueError, match="MatryoshkaModel"):
        save_checkpoint(tmp_path / "x.pt", nn.Linear(2, 2))


def test_transform_comes_from_the_dataset_registry(tmp_path):
    from mrl_analysis.data.registry import get_eval_transform

    model = _small_model("ff")
    model.meta = {"dataset": "fashion-mnist"}
    loaded = load_model(save_checkpoint(tmp_path / "m.pt", model))
    assert repr(loaded.transform) == repr(get_eval_transform("fashion-mnist"))

    model.meta = {"dataset": "not-a-registered-dataset"}
    with pytest.warns(UserWarning, match="not-a-registered-dataset"):
        loaded = load_model(save_checkpoint(tmp_path / "m.pt", model))
    assert loaded.transform is None
