"""CIFAR-100 (splits ``train`` / ``test``): torchvision's python release.

The files live in ``root/cifar-100-python/`` (default root ``$MRL_DATA_DIR`` or ``data/``);
torchvision's downloader fetches the archive there (md5-checked) when ``root`` is not given
or ``download=True``. The superclasses are CIFAR's 20 coarse labels. Images are held in
memory as a uint8 tensor.

The release is a set of pickled dicts. They are read by :class:`CifarUnpickler`, which
rebuilds only what the format holds (dicts, lists, strings, numbers and numpy arrays) and
refuses every other object, so a file planted in a folder the user names cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from mrl_analysis.data.bundle import Parts, Selector, data_dir
from mrl_analysis.data.fingerprint import file_digest
from mrl_analysis.data.transforms import tensor_transforms

SPLITS = ("train", "test")
IMAGE_SIZE = 32
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def transforms(size: int) -> tuple[v2.Compose, v2.Compose]:
    """``(evaluation, training)`` transforms for ``size`` px images."""
    return tensor_transforms(size, 4, CIFAR100_MEAN, CIFAR100_STD)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a Python object outside the CIFAR format (its name is the message)."""


class CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python release and nothing else.

    A pickle names the callables it wants run (``GLOBAL``), and any file can name
    ``os.system``. Allowed are only what rebuilds a numpy array (``_reconstruct`` and
    ``_frombuffer`` under numpy's old and new module names, ``ndarray``, ``dtype``) and
    ``_codecs.encode`` (how Python 3 writes ``bytes`` at protocol 2); any other name raises
    :class:`RefusedGlobalError` before anything is called.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        (module, name): obj
        for name, obj in (
            ("_reconstruct", np.array(0).__reduce__()[0]),  # protocols 0-4
            ("_frombuffer", np.zeros(1).__reduce_ex__(5)[0]),  # protocol 5
        )
        for module in (
            "numpy.core.multiarray",
            "numpy._core.multiarray",
            "numpy.core.numeric",
            "numpy._core.numeric",
        )
    } | {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise RefusedGlobalError(f"{module}.{name}") from None


def _unpickle(path: Path, keys: tuple[str, ...]) -> dict:
    """The dict in the CIFAR file ``path``, holding at least ``keys``."""
    fix = (
        "Delete the cifar-100-python folder and let torchvision download the official "
        "release again (download=True)"
    )
    try:
        with open(path, "rb") as f:
            # latin1: the release was pickled by Python 2 (its byte strings decode 1:1).
            entry = CifarUnpickler(f, encoding="latin1").load()
    except RefusedGlobalError as err:
        raise ValueError(
            f"refusing to read {path}: it asks to unpickle {err}, which could run code; a "
            f"CIFAR-100 file holds only dicts, lists, strings, numbers and numpy arrays. {fix}."
        ) from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise ValueError(
            f"cannot read {path}: not a CIFAR-100 python file ({type(err).__name__}: {err}). {fix}."
        ) from err
    missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise ValueError(f"{path} is not a CIFAR-100 python file (no {missing}). {fix}.")
    return entry


def _images(path: Path, data: Any, n: int) -> np.ndarray:
    """``data`` as uint8 ``[n, 3, 32, 32]``; anything else is a broken file."""
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.size != n * 3 * IMAGE_SIZE * IMAGE_SIZE
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(
            f"{path}: 'data' must be uint8 images [{n}, 3072] (one row per label), got "
            f"{what}; delete the file and download the release again (download=True)"
        )
    return data.reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE)


def _labels(path: Path, values: Any, key: str, count: int) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {key!r} must be a list of integer labels")
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        raise ValueError(f"{path}: {key!r} must lie in 0..{count - 1} (one of {count} classes)")
    return labels.astype(np.int64)


def parts(split: str, root: Path | None, select: Selector, download: bool | None = None) -> Parts:
    """Read split ``split``; ``download`` (default: when no ``root`` is given) lets
    torchvision fetch missing files."""
    base = root if root is not None else data_dir()
    folder = base / "cifar-100-python"
    files = [folder / split, folder / "meta"]
    failure = ""
    missing = not all(f.is_file() for f in files)
    if missing and (download if download is not None else root is None):
        try:
            # The archive is md5-checked; torchvision's CIFAR100 itself would unpickle it.
            download_and_extract_archive(
                CIFAR100.url, str(base), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5
            )
        except (OSError, RuntimeError) as err:
            failure = f" torchvision's download into {base} failed: {err}."
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"CIFAR-100 files {files[0]} and {files[1]} not found.{failure} Fix: pass root= "
            "the folder holding cifar-100-python/, or download=True to let torchvision fetch "
            "it there."
        )
    meta = _unpickle(files[1], ("fine_label_names", "coarse_label_names"))
    entry = _unpickle(files[0], ("data", "fine_labels", "coarse_labels"))
    ids, coarse_names = (
        [str(n) for n in meta[key]] for key in ("fine_label_names", "coarse_label_names")
    )
    fine = _labels(files[0], entry["fine_labels"], "fine_labels", len(ids))
    coarse = _labels(files[0], entry["coarse_labels"], "coarse_labels", len(coarse_names))
    if len(coarse) != len(fine):
        raise ValueError(f"{files[0]}: {len(fine)} fine labels but {len(coarse)} coarse ones")
    images = _images(files[0], entry["data"], len(fine))
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    hierarchy = {ids[f]: coarse_names[c].replace("_", " ") for f, c in pairs}
    names = [n.replace("_", " ") for n in ids]
    return Parts(
        class_ids=ids,
        class_names=names,
        keep=select(ids, names),
        targets=fine,
        sample_ids=[f"{split}/{i}" for i in range(len(fine))],
        digest=file_digest(files),
        in_channels=3,
        image_size=IMAGE_SIZE,
        root=folder,
        images=torch.from_numpy(images.copy()),
        hierarchy=hierarchy,
    )
