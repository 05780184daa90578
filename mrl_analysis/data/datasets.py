"""Datasets by name: ``get_dataset(name, split, ...) -> DatasetBundle``.

Every dataset comes back as a :class:`DatasetBundle` (see ``docs/architecture.md``): a
torch ``Dataset`` yielding ``(image tensor [C, H, W], label)`` plus the labels, class
ids/names, a superclass ``hierarchy``, stable ``sample_ids``, boxes when the data has them,
the transform and a ``fingerprint`` of the data.

Registered names (``list_datasets()``) and their layouts:

* ``fashion-mnist`` (splits ``train``/``test``): the four standard idx files (``.gz`` or
  not), looked up in ``root`` (or ``$MRL_DATA_DIR``), its ``fashion-mnist/`` and
  ``FashionMNIST/raw/`` subfolders, then ``/usr/share/datasets/fashion-mnist`` (Debian
  package ``dataset-fashion-mnist``), then ``data/``; without ``root=`` torchvision
  downloads them into ``$MRL_DATA_DIR`` (or ``data/``) as a last resort. Held in memory as
  a uint8 tensor, so transforms run on tensors (``torchvision.transforms.v2``).
* ``tiny-imagenet`` (``train``/``val``): the native layout at ``root`` (default
  ``$MRL_DATA_DIR/tiny-imagenet-200``); classes are the sorted wnids, names the first
  synonym in ``words.txt``, boxes from the box/annotation files.
* ``cifar100`` (``train``/``test``): ``root/cifar-100-python/`` (torchvision downloads it
  there when ``root`` is not given or ``download=True``); superclasses are CIFAR's 20
  coarse labels.
* ``imagenet``: ``root/train/<wnid>/...`` and ``root/val/<wnid>/...`` (default root
  ``$MRL_DATA_DIR/imagenet``), and the shifted evaluation sets as extra splits: ``v2``
  (``root/imagenet-v2/``, folders ``0``..``999`` = class index), ``a`` and ``r``
  (``root/imagenet-a/``, ``root/imagenet-r/``: 200 wnid folders each; labels stay
  1000-way, ``class_subset_indices`` lists the 200 classes to restrict logits to) and
  ``sketch`` (``root/imagenet-sketch/``, 1000 wnid folders). A set folder holding a single
  subfolder (as the archives unpack) is descended into, and ``root=`` may also point at
  the set folder itself.
* ``folder``: any ``ImageFolder`` tree at ``root`` (``root/<split>/`` if that exists);
  option ``image_size`` (default 224).

Default superclass hierarchies: Fashion-MNIST uses :data:`FASHION_MNIST_SUPERCLASSES`,
CIFAR-100 its coarse labels, ImageNet the MRL paper's 30 WordNet superclasses plus
``"other"`` (its 31-way setup), Tiny-ImageNet the broad
:data:`~mrl_analysis.data.wordnet.COARSE_SUPERCLASSES`. ``hierarchy=`` (a JSON file or a dict
``class id or name -> superclass``) replaces it for any dataset.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import inspect
import io
import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR100, FashionMNIST
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2

from mrl_analysis.data import wordnet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Grouped by what the garment is worn on; Fashion-MNIST itself has no hierarchy.
FASHION_MNIST_SUPERCLASSES = {
    "T-shirt/top": "tops",
    "Pullover": "tops",
    "Coat": "tops",
    "Shirt": "tops",
    "Trouser": "bottoms",
    "Dress": "dresses",
    "Sandal": "footwear",
    "Sneaker": "footwear",
    "Ankle boot": "footwear",
    "Bag": "bags",
}
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_SHIFTED = {
    "v2": "imagenet-v2",
    "a": "imagenet-a",
    "r": "imagenet-r",
    "sketch": "imagenet-sketch",
}
_WNID = re.compile(r"n\d{8}")


@dataclass
class DatasetBundle:
    """A dataset split with everything analyses need to know about it.

    ``targets[i]`` is the label of ``dataset[i]`` and ``sample_ids[i]`` its stable id
    (path relative to ``root``, or ``"split/index"`` for in-memory data). ``boxes`` are
    ``(x0, y0, x1, y1)`` in original pixels, NaN where an image has none.
    ``class_subset_indices`` (ImageNet-A/R) lists the labels the split can contain.
    """

    name: str
    split: str
    dataset: Dataset
    targets: np.ndarray
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    sample_ids: list[str]
    boxes: np.ndarray | None
    transform: Callable | None
    fingerprint: str
    in_channels: int
    image_size: int
    root: Path | None = None
    class_subset_indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


class UnreadableImageError(ValueError):
    """An image file PIL cannot decode (truncated, corrupt or not an image)."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB PIL image; a decoding failure names the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"cannot read image {path}: {err}. Remove or replace this file "
            "(or re-extract the dataset), then load the dataset again."
        ) from err


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 tensor ``[N, C, H, W]``; transforms get tensors."""

    def __init__(
        self, images: torch.Tensor, targets: np.ndarray, transform: Callable | None = None
    ) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class ImageFileDataset(Dataset):
    """Image files ``root / files[i]`` loaded as RGB PIL images, then ``transform``."""

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        targets: np.ndarray,
        transform: Callable | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = files
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_image(self.root / self.files[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


# -- registry ----------------------------------------------------------------------------


@dataclass
class _Parts:
    """What a builder found, labelled over its full class list (before ``classes=``)."""

    class_ids: list[str]
    class_names: list[str]
    keep: np.ndarray  # indices of the selected classes, in the requested order
    targets: np.ndarray  # full-list labels; samples of unselected classes may be present
    sample_ids: list[str]
    digest: str
    in_channels: int
    image_size: int
    root: Path | None
    images: torch.Tensor | None = None  # in-memory data; else files under root
    boxes: np.ndarray | None = None
    hierarchy: dict[str, str] | None = None
    class_subset: np.ndarray | None = None


Selector = Callable[[Sequence[str], Sequence[str]], np.ndarray]
Transforms = Callable[[int], tuple[Callable, Callable]]


@dataclass(frozen=True)
class _Entry:
    splits: tuple[str, ...]
    build: Callable[..., _Parts]
    transforms: Transforms  # image size -> (evaluation, training) transforms
    image_size: int


_REGISTRY: dict[str, _Entry] = {}


def _register(
    name: str, splits: tuple[str, ...], transforms: Transforms, image_size: int
) -> Callable:
    def wrap(builder: Callable[..., _Parts]) -> Callable[..., _Parts]:
        _REGISTRY[name] = _Entry(splits, builder, transforms, image_size)
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return sorted(_REGISTRY)


def data_dir() -> Path:
    """``$MRL_DATA_DIR`` if set, else ``data/`` under the working directory."""
    return Path(os.environ.get("MRL_DATA_DIR") or "data")


def get_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    classes: Sequence[str | int] | None = None,
    augment: bool = False,
    transform: Callable | None = None,
    hierarchy: str | os.PathLike | Mapping[str, str] | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load split ``split`` of dataset ``name`` (see the module docstring for layouts).

    ``classes``: class ids, names or indices to keep; labels become ``0..k-1`` in the given
    order. ``augment``: the training augmentation instead of the evaluation transform;
    ``transform`` replaces both. ``hierarchy``: a JSON file or dict mapping every kept
    class (id or name) to a superclass. ``options``: dataset-specific keywords
    (``download`` for fashion-mnist/cifar100, ``image_size`` for folder).
    """
    entry = _entry(name)
    if split not in entry.splits:
        raise ValueError(f"{name} has no split {split!r}: choose one of {', '.join(entry.splits)}")
    accepted = [
        p for p in inspect.signature(entry.build).parameters if p not in ("split", "root", "select")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    if transform is not None and augment:
        raise ValueError("pass either augment=True or transform=..., not both")

    def select(ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
        return _resolve_classes(classes, ids, names)

    root = None if root is None else Path(root)
    parts = entry.build(split=split, root=root, select=select, **options)
    if transform is None:
        transform = entry.transforms(parts.image_size)[1 if augment else 0]
    return _assemble(name, split, parts, transform, hierarchy)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
    return _REGISTRY[name]


def get_eval_transform(name: str, image_size: int | None = None) -> Callable:
    """The evaluation transform ``get_dataset(name)`` applies, without reading any data.

    This is what a model trained on ``name`` expects at inference. ``image_size`` only
    matters for ``folder`` (default 224).
    """
    entry = _entry(name)
    return entry.transforms(image_size or entry.image_size)[0]


def _assemble(
    name: str,
    split: str,
    parts: _Parts,
    transform: Callable,
    hierarchy: str | os.PathLike | Mapping[str, str] | None,
) -> DatasetBundle:
    lut = np.full(len(parts.class_ids), -1, dtype=np.int64)
    lut[parts.keep] = np.arange(len(parts.keep))
    relabelled = lut[parts.targets]
    index = np.flatnonzero(relabelled >= 0)
    targets = relabelled[index]
    everything = len(index) == len(parts.targets)
    sample_ids = parts.sample_ids if everything else [parts.sample_ids[i] for i in index]
    boxes = None if parts.boxes is None else parts.boxes[index]
    class_ids = [parts.class_ids[i] for i in parts.keep]
    class_names = [parts.class_names[i] for i in parts.keep]
    if parts.images is not None:
        images = parts.images if everything else parts.images[torch.from_numpy(index)]
        dataset: Dataset = TensorImageDataset(images, targets, transform)
    else:
        dataset = ImageFileDataset(parts.root, sample_ids, targets, transform)
    if hierarchy is not None:
        tree: dict[str, str] | None = _user_hierarchy(hierarchy, class_ids, class_names)
    elif parts.hierarchy is not None and all(c in parts.hierarchy for c in class_ids):
        tree = {c: parts.hierarchy[c] for c in class_ids}
    else:
        tree = None
    subset = None
    if parts.class_subset is not None:
        subset = np.sort(lut[parts.class_subset][lut[parts.class_subset] >= 0])
    digest = hashlib.sha256(
        json.dumps(
            {"dataset": name, "split": split, "data": parts.digest, "classes": class_ids}
        ).encode()
    )
    digest.update(targets.tobytes())
    if boxes is not None:
        digest.update(np.ascontiguousarray(boxes).tobytes())
    return DatasetBundle(
        name=name,
        split=split,
        dataset=dataset,
        targets=targets,
        class_names=class_names,
        class_ids=class_ids,
        hierarchy=tree,
        sample_ids=sample_ids,
        boxes=boxes,
        transform=transform,
        fingerprint=digest.hexdigest()[:16],
        in_channels=parts.in_channels,
        image_size=parts.image_size,
        root=parts.root,
        class_subset_indices=subset,
    )


# -- classes and hierarchies --------------------------------------------------------------


def _resolve_classes(
    classes: Sequence[str | int] | str | int | None, ids: Sequence[str], names: Sequence[str]
) -> np.ndarray:
    if classes is None:
        return np.arange(len(ids))
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    by_id = {c: i for i, c in enumerate(ids)}
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_name.setdefault(n, []).append(i)
    keep: list[int] = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= c < len(ids):
                raise ValueError(f"class index {c} out of range: this split has {len(ids)} classes")
            keep.append(int(c))
        elif c in by_id:
            keep.append(by_id[c])
        elif len(by_name.get(c, [])) == 1:
            keep.append(by_name[c][0])
        elif c in by_name:
            raise ValueError(
                f"class name {c!r} is ambiguous: it names {[ids[i] for i in by_name[c]]}; "
                "select by class id instead"
            )
        else:
            close = difflib.get_close_matches(str(c), [*by_id, *by_name], n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"unknown class {c!r}: not a class id, name or index{hint}")
    if len(set(keep)) != len(keep):
        raise ValueError(f"classes= names some class twice: {list(classes)}")
    if not keep:
        raise ValueError("classes= is empty: give at least one class id, name or index")
    return np.asarray(keep, dtype=np.int64)


def _user_hierarchy(
    hierarchy: str | os.PathLike | Mapping[str, str],
    class_ids: Sequence[str],
    class_names: Sequence[str],
) -> dict[str, str]:
    if isinstance(hierarchy, Mapping):
        mapping, source = dict(hierarchy), "the hierarchy mapping"
    else:
        path = Path(hierarchy)
        if not path.is_file():
            raise FileNotFoundError(
                f"hierarchy file {path} not found: give a JSON file mapping class -> superclass"
            )
        mapping, source = json.loads(path.read_text()), str(path)
        if not isinstance(mapping, dict):
            raise ValueError(f"{path} must hold a JSON object mapping class -> superclass")
    out, missing = {}, []
    for cid, cname in zip(class_ids, class_names, strict=True):
        parent = mapping.get(cid, mapping.get(cname))
        if parent is None:
            missing.append(cid)
        else:
            out[cid] = str(parent)
    if missing:
        raise ValueError(
            f"{source} gives no superclass for {len(missing)} classes, e.g. {missing[:5]}; "
            "map every class (by id or name) to a superclass"
        )
    return out


def split_classes(
    class_ids: Sequence[str], n_pretrain: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split classes at random into ``n_pretrain`` pretraining and the remaining novel ones.

    Seeded and deterministic; each part keeps the order of ``class_ids``.
    """
    ids = list(class_ids)
    if not 0 < n_pretrain < len(ids):
        raise ValueError(f"n_pretrain must be in 1..{len(ids) - 1}, got {n_pretrain}")
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[np.random.default_rng(seed).permutation(len(ids))[:n_pretrain]] = True
    pretrain = [c for c, k in zip(ids, chosen, strict=True) if k]
    novel = [c for c, k in zip(ids, chosen, strict=True) if not k]
    return pretrain, novel


# -- fingerprints -------------------------------------------------------------------------

_DIGESTS: dict[str, str] = {}


def _cache_file() -> Path:
    base = os.environ.get("MRL_CACHE_DIR") or Path.home() / ".cache" / "mrl-analysis"
    return Path(base) / "fingerprints.json"


def _cached(key: str, compute: Callable[[], str]) -> str:
    """``compute()`` memoised in memory and in ``$MRL_CACHE_DIR/fingerprints.json``."""
    if key in _DIGESTS:
        return _DIGESTS[key]
    path = _cache_file()
    try:
        disk = json.loads(path.read_text())
    except (OSError, ValueError):
        disk = {}
    if key not in disk:
        disk[key] = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
                json.dump(disk, tmp)
            os.replace(tmp.name, path)
        except OSError:
            pass  # the cache only saves time; an unwritable home just means recomputing
    _DIGESTS[key] = disk[key]
    return disk[key]


def _file_digest(paths: Iterable[Path]) -> str:
    """sha256 of the files' contents (cached by path, size and mtime)."""
    digests = []
    for p in paths:
        st = p.stat()
        key = f"file:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"

        def compute(p: Path = p) -> str:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            return h.hexdigest()

        digests.append(_cached(key, compute))
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _listing_digest(root: Path, files: Sequence[str]) -> str:
    """sha256 of relative paths (in dataset order) and file sizes.

    The sizes need one ``stat`` per file, so the result is cached under the listing and
    the modification times of the folders holding the files.
    """
    base = str(root.resolve())
    listing = "\n".join(files).encode()
    key = hashlib.sha256(listing)
    key.update(base.encode())
    for d in sorted({f.rpartition("/")[0] for f in files}):
        key.update(f"{d}:{os.stat(os.path.join(base, d)).st_mtime_ns}".encode())

    def compute() -> str:
        sizes = np.fromiter(
            (os.stat(os.path.join(base, f)).st_size for f in files),
            dtype=np.int64,
            count=len(files),
        )
        return hashlib.sha256(listing + sizes.tobytes()).hexdigest()

    return _cached(f"listing:{key.hexdigest()}", compute)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _image_transforms(
    size: int, mean: Sequence[float], std: Sequence[float], resize: int | None, crop_scale
) -> tuple[v2.Compose, v2.Compose]:
    tail = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]
    head = [v2.Resize(resize), v2.CenterCrop(size)] if resize else []
    return (
        v2.Compose([*head, *tail]),
        v2.Compose(
            [v2.RandomResizedCrop(size, scale=crop_scale), v2.RandomHorizontalFlip(), *tail]
        ),
    )


def _tensor_transforms(
    size: int, padding: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[v2.Compose, v2.Compose]:
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return (
        v2.Compose(tail),
        v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(size, padding=padding), *tail]),
    )


def _wordnet_hierarchy(ids: Sequence[str], superclasses: Sequence[str]) -> dict[str, str] | None:
    wn = wordnet.load_wordnet()
    if not all(w in wn for w in ids):
        return None
    return wn.superclass_map(ids, superclasses=superclasses, reject="other")


# -- Fashion-MNIST ------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file; re-download it")
    ndim = raw[3]
    shape = tuple(int(x) for x in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape)) + 4 + 4 * ndim
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated ({len(raw)} of {expected} bytes); re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_files(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = folder / f"{prefix}-{kind}"
        path = next((p for p in (stem.with_name(stem.name + ".gz"), stem) if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


@_register(
    "fashion-mnist",
    ("train", "test"),
    lambda size: _tensor_transforms(size, 2, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    image_size=28,
)
def _fashion_mnist(
    split: str, root: Path | None, select: Selector, download: bool | None = None
) -> _Parts:
    prefix = "train" if split == "train" else "t10k"

    def folders(base: Path) -> list[Path]:
        return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]

    env = os.environ.get("MRL_DATA_DIR")
    if root is not None:
        candidates = folders(root)
    else:
        candidates = [
            *(folders(Path(env)) if env else []),
            FASHION_MNIST_SYSTEM_DIR,
            *([] if env else folders(Path("data"))),
        ]
    files = next((f for d in candidates if (f := _idx_files(d, prefix))), None)
    failure = ""
    if files is None and (download if download is not None else root is None):
        target = root if root is not None else data_dir()
        try:
            FashionMNIST(str(target), train=split == "train", download=True)
            files = _idx_files(target / "FashionMNIST" / "raw", prefix)
        except (OSError, RuntimeError) as err:
            failure = f" torchvision's download into {target} failed too: {err}."
    if files is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], "
            f"{prefix}-labels-idx1-ubyte[.gz]) not found in: "
            f"{', '.join(map(str, candidates))}.{failure} Fix: "
            "`apt-get install dataset-fashion-mnist`, or put the files in $MRL_DATA_DIR "
            "(or pass root=), or let torchvision download them (omit root=, or pass "
            "download=True)."
        )
    images, labels = (_read_idx(p) for p in files)
    if len(images) != len(labels):
        raise ValueError(f"{files[0]} has {len(images)} images but {files[1]} {len(labels)} labels")
    ids = list(FASHION_MNIST_CLASSES)
    return _Parts(
        class_ids=ids,
        class_names=ids,
        keep=select(ids, ids),
        targets=labels.astype(np.int64),
        sample_ids=[f"{split}/{i}" for i in range(len(labels))],
        digest=_file_digest(files),
        in_channels=1,
        image_size=28,
        root=files[0].parent,
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        hierarchy=dict(FASHION_MNIST_SUPERCLASSES),
    )


# -- CIFAR-100 ----------------------------------------------------------------------------


def _unpickle(path: Path) -> dict:
    # The CIFAR python release is pickled dicts; torchvision reads it the same way.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


@_register(
    "cifar100",
    ("train", "test"),
    lambda size: _tensor_transforms(size, 4, CIFAR100_MEAN, CIFAR100_STD),
    image_size=32,
)
def _cifar100(
    split: str, root: Path | None, select: Selector, download: bool | None = None
) -> _Parts:
    base = root if root is not None else data_dir()
    folder = base / "cifar-100-python"
    files = [folder / split, folder / "meta"]
    failure = ""
    missing = not all(f.is_file() for f in files)
    if missing and (download if download is not None else root is None):
        try:
            CIFAR100(str(base), train=split == "train", download=True)
        except (OSError, RuntimeError) as err:
            failure = f" torchvision's download into {base} failed: {err}."
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"CIFAR-100 files {files[0]} and {files[1]} not found.{failure} Fix: pass root= "
            "the folder holding cifar-100-python/, or download=True to let torchvision fetch "
            "it there."
        )
    entry, meta = _unpickle(files[0]), _unpickle(files[1])
    fine = np.asarray(entry["fine_labels"], dtype=np.int64)
    coarse = np.asarray(entry["coarse_labels"], dtype=np.int64)
    ids = list(meta["fine_label_names"])
    coarse_names = [n.replace("_", " ") for n in meta["coarse_label_names"]]
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    hierarchy = {ids[f]: coarse_names[c] for f, c in pairs}
    names = [n.replace("_", " ") for n in ids]
    images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return _Parts(
        class_ids=ids,
        class_names=names,
        keep=select(ids, names),
        targets=fine,
        sample_ids=[f"{split}/{i}" for i in range(len(fine))],
        digest=_file_digest(files),
        in_channels=3,
        image_size=32,
        root=folder,
        images=torch.from_numpy(images.copy()),
        hierarchy=hierarchy,
    )


# -- Tiny-ImageNet ------------------------------------------------------------------------

_BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


def _read_table(texts: Iterable[str], columns: list[str]) -> pd.DataFrame:
    """Whitespace-separated tables (Tiny-ImageNet box files), parsed in one pass."""
    return pd.read_csv(
        io.StringIO("".join(texts)), sep=r"\s+", header=None, names=columns, dtype={"file": str}
    )


def _first_synonyms(path: Path, wnids: Sequence[str]) -> list[str]:
    wanted, found = set(wnids), {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, words = line.partition("\t")
            if wnid in wanted:
                found[wnid] = words.split(",")[0].strip()
    return [found.get(w, w) for w in wnids]


@_register(
    "tiny-imagenet",
    ("train", "val"),
    lambda size: _image_transforms(size, IMAGENET_MEAN, IMAGENET_STD, None, (0.35, 1.0)),
    image_size=64,
)
def _tiny_imagenet(split: str, root: Path | None, select: Selector) -> _Parts:
    root = root if root is not None else data_dir() / "tiny-imagenet-200"
    if not (root / "wnids.txt").is_file():
        raise FileNotFoundError(
            f"no Tiny-ImageNet at {root} (expected {root / 'wnids.txt'}). Fix: pass root= the "
            "tiny-imagenet-200 folder, or set MRL_DATA_DIR to its parent "
            "(download: http://cs231n.stanford.edu/tiny-imagenet-200.zip)."
        )
    ids = sorted((root / "wnids.txt").read_text().split())
    if (root / "words.txt").is_file():
        names = _first_synonyms(root / "words.txt", ids)
    else:
        wn = wordnet.load_wordnet()
        names = [wn.name(w) if w in wn else w for w in ids]
    keep = select(ids, names)
    index = {w: i for i, w in enumerate(ids)}
    if split == "train":
        files, labels, box_texts = [], [], []
        for i in keep:
            wnid = ids[i]
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise FileNotFoundError(f"Tiny-ImageNet class folder {folder} is missing")
            images = sorted(n for n in os.listdir(folder) if _is_image(n))
            files += [f"train/{wnid}/images/{n}" for n in images]
            labels.append(np.full(len(images), i, dtype=np.int64))
            box_file = root / "train" / wnid / f"{wnid}_boxes.txt"
            if box_file.is_file():
                box_texts.append(box_file.read_text().rstrip("\n") + "\n")
        targets = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        table = _read_table(box_texts, ["file", *_BOX_COLUMNS]).drop_duplicates("file")
        # Box files name images without their folder; the wnid prefix keeps names unique.
        by_file = table.set_index("file")[_BOX_COLUMNS]
        box_array = by_file.reindex([f.rpartition("/")[2] for f in files]).to_numpy(np.float32)
    else:
        annotations = (root / "val" / "val_annotations.txt").read_text()
        table = _read_table([annotations], ["file", "wnid", *_BOX_COLUMNS])
        present = set(os.listdir(root / "val" / "images"))
        table = table[table["file"].isin(present) & table["wnid"].isin([ids[i] for i in keep])]
        files = [f"val/images/{n}" for n in table["file"]]
        targets = table["wnid"].map(index).to_numpy(np.int64)
        box_array = table[_BOX_COLUMNS].to_numpy(np.float32)
    return _Parts(
        class_ids=ids,
        class_names=names,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=_listing_digest(root, files),
        in_channels=3,
        image_size=64,
        root=root,
        boxes=box_array,
        hierarchy=_wordnet_hierarchy(ids, wordnet.COARSE_SUPERCLASSES),
    )


# -- ImageFolder layouts (ImageNet and any folder) ----------------------------------------


def _scan(
    root: Path, folder: Path, class_to_idx: Mapping[str, int]
) -> tuple[list[str], np.ndarray]:
    """Image files under ``folder/<class>/`` as paths relative to ``root``, and labels."""
    samples = make_dataset(
        str(folder), dict(class_to_idx), extensions=IMG_EXTENSIONS, allow_empty=True
    )
    cut = len(str(root)) + 1
    return [p[cut:] for p, _ in samples], np.fromiter(
        (t for _, t in samples), dtype=np.int64, count=len(samples)
    )


def _class_folder(folder: Path, looks_like_class: Callable[[str], bool]) -> Path:
    """``folder``, or its only subfolder when the class folders sit one level deeper."""
    subdirs = [d for d in folder.iterdir() if d.is_dir()]
    if len(subdirs) == 1 and not looks_like_class(subdirs[0].name):
        return subdirs[0]
    return folder


@_register(
    "imagenet",
    ("train", "val", *IMAGENET_SHIFTED),
    lambda size: _image_transforms(
        size, IMAGENET_MEAN, IMAGENET_STD, round(size * 256 / 224), (0.08, 1.0)
    ),
    image_size=224,
)
def _imagenet(split: str, root: Path | None, select: Selector) -> _Parts:
    base = root if root is not None else data_dir() / "imagenet"
    classes = wordnet.imagenet1k_classes()
    ids = [w for w, _ in classes]
    names = [n.replace("_", " ") for _, n in classes]
    keep = select(ids, names)
    subset = None
    if split in ("train", "val"):
        folder = base / split
        looks_like_class: Callable[[str], bool] = _WNID.fullmatch
    else:
        folder = base / IMAGENET_SHIFTED[split]
        if not folder.is_dir() and root is not None:
            folder, base = root, root
        looks_like_class = str.isdigit if split == "v2" else _WNID.fullmatch
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no ImageNet {split} folder at {folder}. Fix: pass root= the ImageNet folder "
            f"(holding train/, val/, {', '.join(IMAGENET_SHIFTED.values())}/) or set "
            "MRL_DATA_DIR to the parent of imagenet/; for shifted sets root= may also be the "
            "set's own folder."
        )
    folder = _class_folder(folder, looks_like_class)
    if split == "v2":
        class_to_idx = {str(i): int(i) for i in keep}
    else:
        class_to_idx = {ids[i]: int(i) for i in keep}
        if split in ("a", "r"):
            present = {d.name for d in folder.iterdir() if d.is_dir()}
            subset = np.asarray([i for i, w in enumerate(ids) if w in present], dtype=np.int64)
    files, targets = _scan(base, folder, class_to_idx)
    if not files:
        raise FileNotFoundError(
            f"no images of the selected classes under {folder} (expected "
            f"{'0..999' if split == 'v2' else '<wnid>'}/ class folders of image files)"
        )
    return _Parts(
        class_ids=ids,
        class_names=names,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=_listing_digest(base, files),
        in_channels=3,
        image_size=224,
        root=base,
        hierarchy=_wordnet_hierarchy(ids, wordnet.PAPER_SUPERCLASSES),
        class_subset=subset,
    )


@_register(
    "folder",
    ("train", "val", "test"),
    lambda size: _image_transforms(
        size, IMAGENET_MEAN, IMAGENET_STD, round(size * 256 / 224), (0.08, 1.0)
    ),
    image_size=224,
)
def _folder(split: str, root: Path | None, select: Selector, image_size: int = 224) -> _Parts:
    if root is None:
        raise ValueError("the folder dataset needs root= (a folder of <class>/<image> files)")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    folder = root / split if (root / split).is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    ids = sorted(d.name for d in os.scandir(folder) if d.is_dir())
    if not ids:
        raise FileNotFoundError(f"no class folders in {folder}: expected <class>/<image> files")
    keep = select(ids, ids)
    files, targets = _scan(root, folder, {ids[i]: int(i) for i in keep})
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    return _Parts(
        class_ids=ids,
        class_names=ids,
        keep=keep,
        targets=targets,
        sample_ids=files,
        digest=_listing_digest(root, files),
        in_channels=3,
        image_size=image_size,
        root=root,
    )
