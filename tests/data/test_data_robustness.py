"""Bad data gets a clear error and never runs code: planted CIFAR pickles, same-size edits,
empty class folders, 16-bit images, non-UTF-8 file names, and wrongly typed arguments."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrl_analysis.data.bundle import load_image
from mrl_analysis.data.registry import get_dataset, get_eval_transform, split_classes


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # Fingerprint cache and default data folder must not touch the user's real ones.
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def _image(path: Path, value: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


# -- CIFAR-100: a restricted unpickler ----------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a harmless, visible side effect."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _cifar_entry(n: int = 6) -> tuple[dict, dict]:
    fine = np.arange(n) % 100
    data = np.arange(n * 3072, dtype=np.int64).astype(np.uint8).reshape(n, 3072)
    entry = {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    return entry, meta


def _write_cifar(root: Path, entry: dict, meta: dict, dump=pickle.dumps) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test").write_bytes(dump(entry))
    (folder / "meta").write_bytes(dump(meta))
    return folder


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as the official release was pickled."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _python2_dumps(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x module names, as in the files written in 2009.
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


@pytest.mark.parametrize("target", ["test", "meta"])
def test_cifar100_planted_pickle_never_runs(tmp_path, target):
    marker = tmp_path / "payload-ran"
    entry, meta = _cifar_entry()
    if target == "test":
        entry["data"] = _Payload(marker)
    else:
        meta["fine_label_names"] = _Payload(marker)
    folder = _write_cifar(tmp_path, entry, meta)
    refused = f"refusing to read {folder / target}: it asks to unpickle [a-z_.]*open,"
    with pytest.raises(ValueError, match=refused):
        get_dataset("cifar100", "test", root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "dump",
    [
        pytest.param(_python2_dumps, id="python2-release"),
        pytest.param(lambda o: pickle.dumps(o, protocol=2), id="protocol-2"),
        pytest.param(lambda o: pickle.dumps(o, protocol=5), id="protocol-5"),
    ],
)
def test_cifar100_format_variants_still_load(tmp_path, dump):
    entry, meta = _cifar_entry(100)
    _write_cifar(tmp_path, entry, meta, dump)
    b = get_dataset("cifar100", "test", root=tmp_path, transform=lambda x: x)
    assert b.targets.tolist() == entry["fine_labels"] and b.class_ids[5] == "fine_5"
    assert b.dataset[1][0].flatten().tolist() == entry["data"][1].tolist()
    assert b.hierarchy["fine_5"] == "coarse 1"


def test_cifar100_broken_files_are_named(tmp_path):
    entry, meta = _cifar_entry()
    folder = _write_cifar(tmp_path, entry, meta)
    (folder / "test").write_bytes(pickle.dumps(entry)[:100])
    with pytest.raises(ValueError, match=f"cannot read {folder / 'test'}: not a CIFAR-100"):
        get_dataset("cifar100", "test", root=tmp_path)
    (folder / "test").write_bytes(pickle.dumps({**entry, "data": np.zeros(5, np.float32)}))
    with pytest.raises(ValueError, match="'data' must be uint8 images"):
        get_dataset("cifar100", "test", root=tmp_path)
    (folder / "test").write_bytes(pickle.dumps({**entry, "fine_labels": [0, 1, 2, 3, 4, 100]}))
    with pytest.raises(ValueError, match="'fine_labels' must lie in 0..99"):
        get_dataset("cifar100", "test", root=tmp_path)


# -- fingerprints ---------------------------------------------------------------------------


def _edit_in_place(path: Path) -> None:
    """Change a byte of ``path`` in place (same size), as an editor would."""
    before = path.stat().st_mtime_ns
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # Two writes within one clock tick can share an mtime; an edit by a person never does.
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_fingerprint_notices_same_size_edits_of_folder_images(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            _image(tmp_path / "f" / c / f"{i}.png", 40 * i)
    first = get_dataset("folder", root=tmp_path / "f").fingerprint
    assert get_dataset("folder", root=tmp_path / "f").fingerprint == first
    _edit_in_place(tmp_path / "f" / "a" / "0.png")
    assert get_dataset("folder", root=tmp_path / "f").fingerprint != first


def test_fingerprint_notices_same_size_edits_of_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n01443537", "n01629819"]
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    for w in wnids:
        for i in range(2):
            _image(root / "train" / w / "images" / f"{w}_{i}.JPEG", 10 * i)
    first = get_dataset("tiny-imagenet", "train", root=root).fingerprint
    _edit_in_place(root / "train" / wnids[1] / "images" / f"{wnids[1]}_0.JPEG")
    assert get_dataset("tiny-imagenet", "train", root=root).fingerprint != first


# -- class folders, image depth, file names ------------------------------------------------


def test_empty_class_folder_is_refused_with_its_name(tmp_path):
    _image(tmp_path / "f" / "cat" / "0.png")
    _image(tmp_path / "f" / "dog" / "0.png")
    (tmp_path / "f" / "empty").mkdir()
    (tmp_path / "f" / "notes").mkdir()
    (tmp_path / "f" / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"2 class folder\(s\) .* no image files.*: empty, notes"):
        get_dataset("folder", root=tmp_path / "f")
    kept = get_dataset("folder", root=tmp_path / "f", classes=["cat", "dog"])
    assert kept.class_ids == ["cat", "dog"] and kept.targets.tolist() == [0, 1]


def test_empty_imagenet_and_tiny_imagenet_class_folders_are_refused(tmp_path):
    _image(tmp_path / "imagenet" / "val" / "n01440764" / "0.JPEG")
    (tmp_path / "imagenet" / "val" / "n01443537").mkdir()
    with pytest.raises(ValueError, match="n01443537"):
        get_dataset("imagenet", "val", root=tmp_path / "imagenet")
    root = tmp_path / "tiny"
    (root / "train" / "n01443537" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n01443537")
    with pytest.raises(ValueError, match="n01443537/images holds no image files"):
        get_dataset("tiny-imagenet", "train", root=root)


def test_16_bit_greyscale_images_are_scaled_not_clipped(tmp_path):
    ramp = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "g32.tif")  # mode "I"
    for name in ("g16.png", "g32.tif"):
        rgb = np.asarray(load_image(tmp_path / name))
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257).astype(np.uint8))
        assert np.mean(rgb == 255) < 0.01  # PIL's plain convert makes 99.6% of it white


def test_non_utf8_file_name_is_named(tmp_path):
    _image(tmp_path / "f" / "a" / "fine.png")
    _image(tmp_path / "f" / "b" / "fine.png")
    _image(Path(os.fsdecode(os.fsencode(tmp_path / "f" / "a") + b"/caf\xe9.png")))
    with pytest.raises(ValueError, match=r"not valid UTF-8: a/caf\\xe9\.png.*rename"):
        get_dataset("folder", root=tmp_path / "f")


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: get_dataset("folder", root=r, image_size=4.9), TypeError, "image_size"),
        (lambda r: get_dataset("folder", root=r, image_size="64"), TypeError, "image_size"),
        (lambda r: get_dataset("folder", root=r, image_size=0), ValueError, "image_size"),
        (lambda r: get_dataset("folder", root=r, augment="yes"), TypeError, "augment"),
        (lambda r: get_dataset("folder", root=r, transform="crop"), TypeError, "transform"),
        (lambda r: get_dataset("folder", root=5), TypeError, "root must be a folder path"),
        (lambda r: get_dataset("cifar100", root=r, download="no"), TypeError, "download"),
        (lambda r: get_eval_transform("folder", image_size=2.5), TypeError, "image_size"),
        (lambda r: split_classes(list("abcdef"), 2.5), TypeError, "n_pretrain"),
        (lambda r: split_classes(list("abcdef"), 2, seed=-1), ValueError, "seed"),
    ],
)
def test_loader_arguments_are_checked_not_coerced(tmp_path, call, error, message):
    _image(tmp_path / "f" / "a" / "0.png")
    with pytest.raises(error, match=message):
        call(tmp_path / "f")
