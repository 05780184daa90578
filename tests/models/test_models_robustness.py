"""Bad checkpoints and arguments fail with one clear line: flipped bytes, NaN weights,
empty / text / garbled files, refused pickles, killed writes' temporary files."""

from __future__ import annotations

import fcntl
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mrl_analysis.models.checkpoints import (
    TEMP_GRACE_SECONDS,
    load_checkpoint,
    load_model,
    remove_stale_temps,
    save_checkpoint,
    weights_sha256,
)
from mrl_analysis.models.loss import MatryoshkaCELoss
from mrl_analysis.models.network import build_model, default_nesting

ROOT = Path(__file__).resolve().parents[2]
#: float32 values whose bytes occur once in a checkpoint: where to flip a byte.
SENTINEL = torch.tensor([1234.5678, -8765.4321, 3.14159e-3, 2.71828e7])


def _model(kind: str = "mrl") -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet18", 4, kind, [4, 512] if kind != "ff" else [32], in_channels=1)
    with torch.no_grad():
        model.fc.nesting_classifier_0.bias.copy_(SENTINEL)
    return model.eval()


def _flip_sentinel_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = bytes(data).find(SENTINEL.numpy().tobytes())
    assert at > 0 and bytes(data).count(SENTINEL.numpy().tobytes()) == 1
    data[at + 1] ^= 0x01  # the mantissa of 1234.5678: still a finite, plausible weight
    path.write_bytes(bytes(data))


# -- integrity: digest and finite weights --------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_flipped_byte_in_our_checkpoint_is_refused(tmp_path, suffix):
    path = save_checkpoint(tmp_path / f"m{suffix}", _model())
    load_model(path)
    _flip_sentinel_byte(path)
    with pytest.raises(ValueError, match=f"{path} is corrupted: .*weights_sha256.*Fix: copy"):
        load_model(path)
    with pytest.raises(ValueError, match="is corrupted"):
        load_checkpoint(path)  # what training resume reads


def test_digest_is_stable_across_reloads_and_formats(tmp_path):
    model = _model("mrl-e")
    digest = weights_sha256(model.state_dict())
    assert digest == weights_sha256(dict(reversed(model.state_dict().items())))
    pt = save_checkpoint(tmp_path / "m.pt", model)
    st = save_checkpoint(tmp_path / "m.safetensors", load_model(pt))
    assert load_checkpoint(pt)["weights_sha256"] == digest
    assert load_checkpoint(st)["weights_sha256"] == digest
    with torch.no_grad():
        model.fc.nesting_classifier_0.bias[0] += 1
    assert weights_sha256(model.state_dict()) != digest


def test_nan_weights_are_refused_naming_the_tensors(tmp_path):
    model = _model()
    with torch.no_grad():
        model.fc.nesting_classifier_1.weight[0, :3] = float("nan")
        model.backbone.conv1.weight[0, 0, 0, 0] = float("inf")
    path = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(ValueError) as err:
        load_model(path)
    msg = str(err.value)
    assert f"refusing to load {path}: NaN / inf weights in 2 tensor(s)" in msg
    assert f"backbone.conv1.weight (1 of {model.backbone.conv1.weight.numel()} values)" in msg
    assert "fc.nesting_classifier_1.weight (3 of 2048 values)" in msg and "Fix:" in msg


def test_authors_style_state_dict_with_nan_is_refused(tmp_path):
    model = build_model("resnet18", 4, "ff", [512])
    state = {
        f"module.{k.removeprefix('backbone.')}": v.clone() for k, v in model.state_dict().items()
    }
    state["module.layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "r50_mrl0_e0_ff512.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"module\.layer1\.0\.conv1\.weight \(1 of 36864"):
        load_model(path, arch="resnet18")


# -- unreadable files: one line each, naming the file -------------------------------------


def _zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def _text(p: Path) -> None:
    p.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin\n")


def _random(p: Path) -> None:
    p.write_bytes(b"\x9c" + np.random.default_rng(0).bytes(4000))


def _truncated(p: Path) -> None:
    save_checkpoint(p, _model())
    p.write_bytes(p.read_bytes()[:20000])


def _garbled_pickle(p: Path) -> None:
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3] + b"\xff\xfe")


def _legacy_truncated(p: Path) -> None:
    torch.save(_model().state_dict(), p, _use_new_zipfile_serialization=False)
    p.write_bytes(p.read_bytes()[:3000])


def _no_state_dict(p: Path) -> None:
    torch.save({"format": "mrl-analysis/1", "config": {"arch": "resnet18"}}, p)


def _not_a_dict(p: Path) -> None:
    torch.save([torch.zeros(2)], p)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_zero_bytes, "the file is empty (0 bytes)"),
        (_text, "it is a text file starting 'root:x:0:0:root:/root:/bin/bash'"),
        (_random, "are no checkpoint format torch writes"),
        (_truncated, "truncated, damaged or not a torch checkpoint"),
        (_garbled_pickle, "(UnpicklingError: Unsupported operand 254)"),
        (_legacy_truncated, "truncated, damaged or not a torch checkpoint"),
        (_no_state_dict, "without 'state_dict' (it holds ['config', 'format'])"),
        (_not_a_dict, "holds a list, not a checkpoint dict"),
    ],
)
def test_unreadable_checkpoints_give_one_clear_line(tmp_path, make, says):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(ValueError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and says in msg and "Fix:" in msg
    assert "\n" not in msg and "weights_only=False" not in msg


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder, not a checkpoint file"):
        load_model(tmp_path)


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_blocked_module_payload_is_refused_by_name(tmp_path):
    # torch 2.14 words this "unsupported GLOBAL posix.system whose module posix is blocked".
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mrl-analysis/1", "meta": _SystemPayload(marker)}, path)
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pt: it holds a pickled posix"):
        load_checkpoint(path)
    assert not marker.exists()


# -- temporary files of killed writes ------------------------------------------------------

_KILLED_WRITER = """
import sys, time
import torch
from mrl_analysis.models import checkpoints
from mrl_analysis.models.network import build_model

def stalled_save(obj, f):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

checkpoints.torch.save = stalled_save
checkpoints.save_checkpoint(sys.argv[1], build_model("resnet18", 4, "mrl", [4, 512]))
"""


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_killed_write_leaves_a_temp_that_the_next_save_removes(tmp_path):
    target = tmp_path / "model.pt"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        (live,) = tmp_path.glob(".model.pt.*.tmp")
        _age(live, 2 * TEMP_GRACE_SECONDS)
        assert remove_stale_temps(tmp_path) == []  # its writer still holds the lock
    finally:
        writer.kill()  # kill -9: no cleanup runs in the writer
        writer.wait()
    (left,) = tmp_path.glob(".model.pt.*.tmp")
    _age(left, 2 * TEMP_GRACE_SECONDS)
    save_checkpoint(target, _model())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_only_old_unlocked_temps_of_our_naming_are_removed(tmp_path):
    ours_old = tmp_path / ".a.pt.123.0123abcd.tmp"
    ours_young = tmp_path / ".b.pt.124.89abcdef.tmp"
    held = tmp_path / ".c.pt.125.deadbeef.tmp"
    others = [tmp_path / "notes.tmp", tmp_path / ".a.pt.tmp", tmp_path / ".d.pt.1.XYZ.tmp"]
    for path in [ours_old, ours_young, held, *others]:
        path.write_bytes(b"x")
    for path in [ours_old, held, *others]:
        _age(path, 2 * TEMP_GRACE_SECONDS)
    (tmp_path / ".e.pt.126.0000aaaa.tmp").symlink_to(ours_young)
    _age(ours_young, 0)
    with open(held, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a live writer
        assert remove_stale_temps(tmp_path) == [ours_old]
    assert not ours_old.exists() and ours_young.exists() and held.exists()
    assert all(p.exists() for p in others)


# -- arguments of the model loaders -------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: load_model(p, nesting=[4.9, 512]), TypeError, "nesting entry"),
        (lambda p: load_model(p, nesting=[512, 4]), ValueError, "strictly increasing"),
        (lambda p: load_model(p, num_classes="4"), TypeError, "num_classes"),
        (lambda p: load_model(p, arch=18), TypeError, "arch"),
        (lambda p: build_model("resnet18", "10"), TypeError, "num_classes"),
        (lambda p: build_model("resnet18", 0), ValueError, "num_classes"),
        (lambda p: build_model("resnet18", 10, "ff", ff_dim=4.9), TypeError, "ff_dim"),
        (lambda p: build_model("resnet18", 10, "ff", ff_dim=4096), ValueError, "ff_dim"),
        (lambda p: build_model("resnet18", 10, nesting=[]), ValueError, "empty"),
        (lambda p: build_model("resnet18", 10, in_channels=0), ValueError, "in_channels"),
        (lambda p: build_model("resnet18", 10, stem="tiny"), ValueError, "stem"),
        (lambda p: default_nesting("2048"), TypeError, "feature_dim"),
        (lambda p: MatryoshkaCELoss([1.0, float("nan")]), ValueError, "relative_importance"),
        (lambda p: MatryoshkaCELoss([1.0, -1.0]), ValueError, "non-negative"),
    ],
)
def test_loader_arguments_are_checked_not_coerced(tmp_path, call, error, message):
    path = save_checkpoint(tmp_path / "m.pt", _model("mrl-e"))
    with pytest.raises(error, match=message):
        call(path)


def test_mrl_e_head_refuses_fractional_sizes_and_loss_checks_targets():
    model = _model("mrl-e")
    features = torch.rand(2, 512)
    with pytest.raises(TypeError, match="truncate_dim"):
        model.fc.logits_at(features, 4.9)
    assert model.fc.logits_at(features, 5).shape == (2, 4)
    loss = MatryoshkaCELoss()
    with pytest.raises(ValueError, match=r"one integer class index per sample, shape \(3,\)"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
