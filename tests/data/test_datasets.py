"""The dataset registry on real data (Fashion-MNIST, ../shared Tiny-ImageNet) and on tiny
folders, idx and CIFAR files that the tests write themselves."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mrl_analysis.data.bundle import DatasetBundle, UnreadableImageError
from mrl_analysis.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_SYSTEM_DIR
from mrl_analysis.data.registry import get_dataset, get_eval_transform, list_datasets, split_classes

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT.parent / "shared" / "data" / "tiny-imagenet-200"
needs_tiny = pytest.mark.skipif(not TINY.is_dir(), reason=f"{TINY} not present")
needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist",
)
TENCH, GOLDFISH, SHARK = "n01440764", "n01443537", "n01484850"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # Fingerprint cache and default data folder must not touch the user's real ones.
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def _jpegs(folder: Path, n: int, size=(40, 30), seed: int = 0, ext: str = ".JPEG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i}{ext}")


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path, n: int = 20, gz: bool = True) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n) % 10
    images = np.broadcast_to(labels[:, None, None] * 20, (n, 28, 28))
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        _idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return labels


# -- registry ------------------------------------------------------------------------------


def test_registry_names_and_errors(tmp_path):
    assert list_datasets() == ["cifar100", "fashion-mnist", "folder", "imagenet", "tiny-imagenet"]
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist.*tiny-imagenet"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="no split 'val'.*train, test"):
        get_dataset("fashion-mnist", "val")
    with pytest.raises(ValueError, match="no option image_size.*download"):
        get_dataset("fashion-mnist", image_size=32)
    with pytest.raises(ValueError, match="either augment=True or transform"):
        get_dataset("fashion-mnist", augment=True, transform=lambda x: x)
    assert "Resize(size=[256]" in repr(get_eval_transform("imagenet"))
    assert "CenterCrop(size=(96, 96))" in repr(get_eval_transform("folder", image_size=96))


# -- Fashion-MNIST -------------------------------------------------------------------------


@pytest.mark.integration
@needs_fashion
def test_fashion_mnist_real_data():
    train, test = get_dataset("fashion-mnist", "train"), get_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.array_equal(np.bincount(train.targets), [6000] * 10)
    assert np.array_equal(np.bincount(test.targets), [1000] * 10)
    assert train.root == FASHION_MNIST_SYSTEM_DIR
    assert (train.in_channels, train.image_size) == (1, 28)
    assert train.class_names == list(FASHION_MNIST_CLASSES) == train.class_ids
    assert train.hierarchy["Ankle boot"] == "footwear" and train.hierarchy["Coat"] == "tops"
    assert test.sample_ids[123] == "test/123" and test.boxes is None
    x, y = test.dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == test.targets[0] == 9
    # The normalisation constants are the training set's own pixel statistics.
    pixels = train.dataset.images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.2860, abs=1e-3)
    assert pixels.std().item() == pytest.approx(0.3530, abs=1e-3)
    batch, labels = next(iter(DataLoader(test.dataset, batch_size=64)))
    assert batch.shape == (64, 1, 28, 28) and torch.equal(
        labels, torch.from_numpy(test.targets[:64])
    )
    assert train.fingerprint != test.fingerprint
    assert get_dataset("fashion-mnist", "test").fingerprint == test.fingerprint


@pytest.mark.integration
@needs_fashion
def test_fashion_mnist_augmentation_and_class_subset():
    aug = get_dataset("fashion-mnist", "test", augment=True, classes=["Bag", "Trouser"])
    assert aug.class_names == ["Bag", "Trouser"] and len(aug) == 2000
    assert set(aug.targets) == {0, 1} and aug.hierarchy == {"Bag": "bags", "Trouser": "bottoms"}
    names = "RandomHorizontalFlip", "RandomCrop(size=(28, 28), padding=[2, 2, 2, 2]"
    assert all(n in repr(aug.transform) for n in names)
    torch.manual_seed(0)
    x, y = aug.dataset[0]
    assert x.shape == (1, 28, 28) and y == aug.targets[0]
    plain = get_dataset("fashion-mnist", "test", classes=[8, 1])
    assert np.array_equal(plain.targets, aug.targets) and plain.sample_ids == aug.sample_ids
    full = get_dataset("fashion-mnist", "test")
    kept = np.flatnonzero(np.isin(full.targets, [8, 1]))
    assert plain.sample_ids == [f"test/{i}" for i in kept]
    assert np.array_equal(np.asarray([8, 1])[plain.targets], full.targets[kept])
    assert torch.equal(plain.dataset[5][0], full.dataset[int(kept[5])][0])
    assert plain.fingerprint != full.fingerprint


def test_fashion_mnist_lookup_order_and_idx_reading(tmp_path, monkeypatch):
    labels = _fake_fashion(tmp_path / "env" / "fashion-mnist", gz=True)
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path / "env"))
    b = get_dataset("fashion-mnist", "test")
    assert b.root == tmp_path / "env" / "fashion-mnist" and np.array_equal(b.targets, labels)
    raw = get_dataset("fashion-mnist", "train", transform=lambda x: x).dataset[3][0]
    assert raw.dtype == torch.uint8 and raw.shape == (1, 28, 28) and int(raw[0, 5, 5]) == 60
    # Uncompressed files given directly as root= work too.
    _fake_fashion(tmp_path / "plain", n=10, gz=False)
    assert len(get_dataset("fashion-mnist", "train", root=tmp_path / "plain")) == 10
    truncated = tmp_path / "bad"
    _fake_fashion(truncated, n=10, gz=False)
    path = truncated / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is truncated"):
        get_dataset("fashion-mnist", "test", root=truncated)


def test_fashion_mnist_missing_files_name_the_search_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        get_dataset("fashion-mnist", "test", root=tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "MRL_DATA_DIR" in message


# -- Tiny-ImageNet (real) ------------------------------------------------------------------


@pytest.mark.integration
@needs_tiny
def test_tiny_imagenet_train_subset_with_boxes():
    b = get_dataset("tiny-imagenet", "train", root=TINY, classes=["n02123045", "goldfish"])
    assert b.class_ids == ["n02123045", "n01443537"] and b.class_names == ["tabby", "goldfish"]
    assert len(b) == 400 and np.array_equal(np.bincount(b.targets), [200, 200])
    assert b.hierarchy == {"n02123045": "feline", "n01443537": "fish"}
    assert b.boxes.shape == (400, 4) and not np.isnan(b.boxes).any()
    first = b.sample_ids[0]
    assert first.startswith("train/n02123045/images/n02123045_") and first.endswith(".JPEG")
    box_file = TINY / "train" / "n02123045" / "n02123045_boxes.txt"
    table = pd.read_csv(box_file, sep="\t", header=None, index_col=0)
    assert np.array_equal(b.boxes[0], table.loc[first.rsplit("/", 1)[1]].to_numpy())
    x, y = b.dataset[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 0
    assert (b.in_channels, b.image_size) == (3, 64)
    aug = get_dataset("tiny-imagenet", "train", root=TINY, classes=[0], augment=True)
    assert "RandomResizedCrop(size=(64, 64), scale=(0.35, 1.0)" in repr(aug.transform)
    assert aug.dataset[1][0].shape == (3, 64, 64)


@pytest.mark.integration
@needs_tiny
def test_tiny_imagenet_val_labels_match_annotations():
    b = get_dataset("tiny-imagenet", "val", root=TINY, classes=[5, 0, 17])
    columns = ["file", "wnid", "x0", "y0", "x1", "y1"]
    annotations = pd.read_csv(TINY / "val" / "val_annotations.txt", sep="\t", names=columns)
    by_file = annotations.set_index("file")
    files = [s.rsplit("/", 1)[1] for s in b.sample_ids]
    assert len(b) == 150 and all(s.startswith("val/images/") for s in b.sample_ids)
    assert [b.class_ids[t] for t in b.targets] == by_file.loc[files, "wnid"].tolist()
    assert np.array_equal(b.boxes, by_file.loc[files, ["x0", "y0", "x1", "y1"]].to_numpy())
    wnids = sorted((TINY / "wnids.txt").read_text().split())
    assert b.class_ids == [wnids[5], wnids[0], wnids[17]]
    full = get_dataset("tiny-imagenet", "val", root=TINY)
    assert len(full) == 10000 and full.num_classes == 200 and len(set(full.hierarchy)) == 200
    assert full.fingerprint != b.fingerprint


def test_tiny_imagenet_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Tiny-ImageNet at .*wnids.txt.*MRL_DATA_DIR"):
        get_dataset("tiny-imagenet", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data/tiny-imagenet-200"):
        get_dataset("tiny-imagenet")


# -- CIFAR-100 (a tiny folder in the real file format) -------------------------------------


def _fake_cifar(root: Path, n: int = 120) -> np.ndarray:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = np.arange(n) * 7 % 100  # every class, as in the real files
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    data[:, 0], data[:, 1], data[:, 2] = 10, 20, 30
    labels = {"fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
    entry = {"data": data.reshape(n, -1), **labels}
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    for name, obj in (("train", entry), ("test", entry), ("meta", meta)):
        (folder / name).write_bytes(pickle.dumps(obj))
    return fine


def test_cifar100_from_its_file_layout(tmp_path):
    fine = _fake_cifar(tmp_path)
    b = get_dataset("cifar100", "test", root=tmp_path)
    assert len(b) == 120 and np.array_equal(b.targets, fine) and b.num_classes == 100
    assert b.class_ids[7] == "fine_7" and b.class_names[7] == "fine 7"
    assert b.hierarchy["fine_7"] == "coarse 1" and b.hierarchy["fine_0"] == "coarse 0"
    raw = get_dataset("cifar100", "test", root=tmp_path, transform=lambda x: x).dataset[0][0]
    assert raw.shape == (3, 32, 32) and raw[:, 0, 0].tolist() == [10, 20, 30]
    sub = get_dataset("cifar100", "train", root=tmp_path, classes=["fine_14", "fine_7"])
    assert sub.targets.tolist() == [1, 0, 1, 0] and sub.hierarchy == {
        "fine_14": "coarse 2",
        "fine_7": "coarse 1",
    }
    assert sub.dataset[0][0].shape == (3, 32, 32) and "Normalize" in repr(sub.transform)
    with pytest.raises(FileNotFoundError, match="cifar-100-python.*download=True"):
        get_dataset("cifar100", "test", root=tmp_path / "missing")


# -- ImageNet layouts (tiny generated JPEG trees) ------------------------------------------


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    root = tmp_path / "imagenet"
    for split, n in (("train", 3), ("val", 2)):
        for k, wnid in enumerate((TENCH, GOLDFISH, SHARK)):
            _jpegs(root / split / wnid, n, seed=k)
    for k in (0, 2):
        _jpegs(root / "imagenet-v2" / str(k), 2, seed=k, ext=".jpeg")
    # ImageNet-A unpacks with one extra folder level; it holds a subset of the classes.
    for wnid in (GOLDFISH, SHARK):
        _jpegs(root / "imagenet-a" / "imagenet-a" / wnid, 1, ext=".jpg")
    return root


def test_imagenet_train_val_and_class_names(imagenet_root):
    train = get_dataset("imagenet", "train", root=imagenet_root)
    assert len(train) == 9 and train.num_classes == 1000
    assert np.array_equal(np.bincount(train.targets), [3, 3, 3])
    assert train.class_names[:2] == ["tench", "goldfish"] and train.class_ids[0] == TENCH
    assert train.class_names[2] == "great white shark" and train.hierarchy[TENCH] == "fish"
    assert train.sample_ids[0] == f"train/{TENCH}/img_0.JPEG" and train.root == imagenet_root
    x, y = train.dataset[4]
    assert x.shape == (3, 224, 224) and y == 1
    val = get_dataset("imagenet", "val", root=imagenet_root, classes=[GOLDFISH, "tench"])
    assert val.class_ids == [GOLDFISH, TENCH] and val.targets.tolist() == [1, 1, 0, 0]
    assert val.hierarchy == {GOLDFISH: "fish", TENCH: "fish"}
    aug = get_dataset("imagenet", "train", root=imagenet_root, augment=True)
    assert "RandomResizedCrop(size=(224, 224)" in repr(aug.transform)
    with pytest.raises(ValueError, match="'crane' is ambiguous.*n02012849.*n03126707"):
        get_dataset("imagenet", "val", root=imagenet_root, classes=["crane"])


def test_imagenet_shifted_sets(imagenet_root):
    v2 = get_dataset("imagenet", "v2", root=imagenet_root)
    assert v2.targets.tolist() == [0, 0, 2, 2] and v2.class_subset_indices is None
    assert v2.sample_ids[0] == "imagenet-v2/0/img_0.jpeg"
    a = get_dataset("imagenet", "a", root=imagenet_root)
    assert a.targets.tolist() == [1, 2] and a.class_subset_indices.tolist() == [1, 2]
    assert a.sample_ids[0] == f"imagenet-a/imagenet-a/{GOLDFISH}/img_0.jpg"
    assert a.dataset[1][0].shape == (3, 224, 224)
    # root= may be the set's own folder; classes= remaps labels and the valid subset.
    direct = get_dataset("imagenet", "a", root=imagenet_root / "imagenet-a", classes=[SHARK, 0])
    assert direct.targets.tolist() == [0] and direct.class_subset_indices.tolist() == [0]
    with pytest.raises(FileNotFoundError, match="imagenet-r"):
        get_dataset("imagenet", "r", root=imagenet_root / "missing")
    with pytest.raises(FileNotFoundError, match="no ImageNet sketch folder"):
        get_dataset("imagenet", "sketch")


# -- generic folders, hierarchies, unreadable images ---------------------------------------


@pytest.fixture
def folder_root(tmp_path) -> Path:
    root = tmp_path / "shapes"
    _jpegs(root / "round" / "balls", 2, seed=1)  # nested folders are part of their class
    _jpegs(root / "square", 3, seed=2, ext=".png")
    return root


def test_folder_dataset_with_hierarchy_file(folder_root, tmp_path):
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"round": "shape", "square": "shape"}))
    b = get_dataset("folder", root=folder_root, image_size=32, hierarchy=tree)
    assert b.class_ids == ["round", "square"] and b.targets.tolist() == [0, 0, 1, 1, 1]
    assert b.sample_ids[0] == "round/balls/img_0.JPEG" and b.hierarchy == {
        "round": "shape",
        "square": "shape",
    }
    assert b.dataset[3][0].shape == (3, 32, 32) and b.image_size == 32
    batch, labels = next(iter(DataLoader(b.dataset, batch_size=5)))
    assert batch.shape == (5, 3, 32, 32) and labels.tolist() == b.targets.tolist()
    with pytest.raises(ValueError, match="no superclass for 1 classes.*square"):
        get_dataset("folder", root=folder_root, hierarchy={"round": "shape"})
    with pytest.raises(FileNotFoundError, match="hierarchy file"):
        get_dataset("folder", root=folder_root, hierarchy=tmp_path / "nope.json")
    with pytest.raises(ValueError, match="needs root="):
        get_dataset("folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_dataset("folder", root=tmp_path / "missing")


def test_hierarchy_json_for_a_built_in_dataset(tmp_path):
    _fake_fashion(tmp_path / "fm", n=10)
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({c: "clothes" for c in FASHION_MNIST_CLASSES}))
    b = get_dataset("fashion-mnist", "test", root=tmp_path / "fm", hierarchy=tree)
    assert set(b.hierarchy.values()) == {"clothes"} and len(b.hierarchy) == 10


def test_unreadable_image_names_the_file(folder_root):
    broken = folder_root / "square" / "img_1.png"
    broken.write_bytes(b"definitely not a png")
    b = get_dataset("folder", root=folder_root, classes=["square"])
    assert b.dataset[0][0].shape == (3, 224, 224)
    with pytest.raises(
        UnreadableImageError, match=f"cannot read image {broken}.*Remove or replace"
    ):
        b.dataset[1]


def test_class_selection_errors(folder_root):
    with pytest.raises(ValueError, match="unknown class 'squares'.*'square'"):
        get_dataset("folder", root=folder_root, classes=["squares"])
    with pytest.raises(ValueError, match="names some class twice"):
        get_dataset("folder", root=folder_root, classes=["square", 1])
    with pytest.raises(ValueError, match="class index 7 out of range"):
        get_dataset("folder", root=folder_root, classes=[7])
    with pytest.raises(ValueError, match="classes= is empty"):
        get_dataset("folder", root=folder_root, classes=[])


def test_fingerprint_tracks_the_files(folder_root):
    first = get_dataset("folder", root=folder_root)
    assert isinstance(first, DatasetBundle) and len(first.fingerprint) == 16
    assert get_dataset("folder", root=folder_root).fingerprint == first.fingerprint
    subset = get_dataset("folder", root=folder_root, classes=["square", "round"])
    assert subset.fingerprint != first.fingerprint
    _jpegs(folder_root / "square" / "more", 1)
    added = get_dataset("folder", root=folder_root).fingerprint
    replaced = folder_root / "round" / "balls" / "img_0.JPEG"
    tmp = replaced.with_suffix(".tmp")
    tmp.write_bytes(replaced.read_bytes() + b"\0" * 10)
    os.replace(tmp, replaced)  # replacing a file updates its folder's mtime
    resized = get_dataset("folder", root=folder_root).fingerprint
    assert len({first.fingerprint, added, resized}) == 3


def test_split_classes_is_seeded_and_disjoint():
    ids = [f"c{i}" for i in range(10)]
    pre, novel = split_classes(ids, 6, seed=3)
    assert (pre, novel) == split_classes(ids, 6, seed=3)
    assert len(pre) == 6 and sorted(pre + novel, key=ids.index) == ids
    assert pre == sorted(pre, key=ids.index) and novel == sorted(novel, key=ids.index)
    assert any(split_classes(ids, 6, seed=s)[0] != pre for s in range(4, 8))
    with pytest.raises(ValueError, match="n_pretrain must be in 1..9"):
        split_classes(ids, 10)
