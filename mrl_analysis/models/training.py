"""Training MRL, MRL-E and FF-k models on a registered dataset, on one process or many.

One checkpoint file per run, rewritten atomically after every epoch with everything a
resume needs (optimizer, scheduler, metrics so far). ``resume=True`` picks up after the last
finished epoch and, with the same config, ends bit-identical to an uninterrupted run on the
same machine: every epoch seeds its shuffling, its augmentation and the global RNG from
``(seed, epoch, rank)``, so no RNG state needs saving.

Speed on a CPU. Data that fits in memory (Fashion-MNIST, Tiny-ImageNet) is decoded once per
process and augmented a batch at a time (:mod:`mrl_analysis.data.decoded`), instead of one
image at a time in Python; ``channels_last`` helps the depthwise convolutions of the mobile
backbones (measured in ``benchmarks/bench_demo.py``); ``compile`` runs the step through
``torch.compile``.

Distributed. Under ``torchrun --nproc_per_node=N [--nnodes ...] -m mrl_analysis.cli train
...`` the same call trains with ``DistributedDataParallel``: ``batch_size`` stays the global
batch (each of the N processes takes ``batch_size / N``), a ``DistributedSampler`` shuffles
with the same per-epoch seed as a single process, validation is split across the processes
and gathered, and only rank 0 locks, writes and resumes the checkpoint (it sends the resumed
state to the others).

Per-epoch validation accuracy is stored as a fraction in [0, 1] per nesting size
(``meta["history"][i]["val_top1"]`` and, for the last epoch, ``meta["metrics"]``, keyed by
the size as a string); the progress line shows it in percent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mrl_analysis.core import dist, parallel
from mrl_analysis.core.checks import check_nesting
from mrl_analysis.core.kinds import check_kind
from mrl_analysis.core.progress import progress as progress_bar
from mrl_analysis.core.progress import progress_write
from mrl_analysis.core.versions import library_versions
from mrl_analysis.data.bundle import DatasetBundle
from mrl_analysis.data.decoded import (
    BatchTransform,
    DecodedImages,
    decode_images,
    forget_decoded,
    iterate_batches,
)
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_checkpoint, save_checkpoint
from mrl_analysis.models.loss import MatryoshkaCELoss
from mrl_analysis.models.network import MatryoshkaModel, build_model

#: Split used for per-epoch validation when the config names none.
DEFAULT_EVAL_SPLIT = {
    "fashion-mnist": "test",
    "cifar100": "test",
    "tiny-imagenet": "val",
    "imagenet": "val",
    "folder": "val",
}

#: Share of the optimizer steps spent warming the learning rate up (one-cycle schedule).
WARMUP_FRACTION = 0.25
#: One-cycle's start and end learning rates, as fractions of ``lr`` (torch's OneCycleLR's).
START_LR_FACTOR = 1 / 25
END_LR_FACTOR = START_LR_FACTOR / 1e4


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint).

    Every field is checked when the config is made (a ValueError names the field, the value
    and what is allowed), so a bad value fails before any data is read. Whether the machine
    has the device asked for is checked when training starts, so a GPU profile can be read
    and checked on a machine without one.

    ``batch_size`` is the global batch: under torchrun each process takes an equal share.
    ``decode``: decode data that fits in memory once and augment it a batch at a time
    (falls back to the per-image loader when it does not fit). ``channels_last``: NHWC
    memory format for the model and inputs. ``compile``: ``torch.compile`` the training
    step (its compile time counts against the run).
    """

    dataset: str = "fashion-mnist"
    arch: str = "resnet18"
    kind: str = "mrl"
    nesting: list[int] | None = None
    ff_dim: int | None = None
    relative_importance: list[float] | None = None
    classes: list[str] | None = None
    data_root: str | None = None
    eval_split: str | None = None
    stem: str = "imagenet"
    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    decode: bool = True
    channels_last: bool = False
    compile: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dataset = _text(self.dataset, "dataset")
        self.arch = _text(self.arch, "arch")
        try:
            check_kind(self.kind)
        except (TypeError, ValueError) as err:
            raise ValueError(f"training option kind: {err}") from None
        if self.nesting is not None:
            try:
                self.nesting = check_nesting(_list(self.nesting, "nesting"))
            except (TypeError, ValueError) as err:
                raise ValueError(f"training option nesting: {err}") from None
        self.ff_dim = _optional_int(self.ff_dim, "ff_dim", 1)
        if self.ff_dim is not None and self.kind != "ff":
            raise ValueError(
                f"training option ff_dim={self.ff_dim} is for kind 'ff' only (kind is "
                f"{self.kind!r}); an MRL model's sizes are its nesting"
            )
        if self.relative_importance is not None:
            weights = [
                _number(w, "relative_importance entry", 0.0)
                for w in _list(self.relative_importance, "relative_importance")
            ]
            if self.nesting is not None and len(weights) != len(self.nesting):
                raise ValueError(
                    f"training option relative_importance has {len(weights)} weights for "
                    f"{len(self.nesting)} nesting sizes {self.nesting}: give one per size"
                )
            self.relative_importance = weights
        if self.classes is not None:
            self.classes = [str(c) for c in _list(self.classes, "classes")]
            if not self.classes:
                raise ValueError("training option classes is empty: give the classes to keep")
        if self.data_root is not None:
            self.data_root = os.fspath(self.data_root)
        if self.eval_split is not None:
            self.eval_split = _text(self.eval_split, "eval_split")
        if self.stem not in ("imagenet", "small"):
            raise ValueError(
                f"training option stem must be 'imagenet' or 'small', got {self.stem!r}"
            )
        self.epochs = _int(self.epochs, "epochs", 1)
        self.batch_size = _int(self.batch_size, "batch_size", 1)
        self.lr = _number(self.lr, "lr", 0.0, low_open=True)
        self.momentum = _number(self.momentum, "momentum", 0.0, 1.0)
        self.weight_decay = _number(self.weight_decay, "weight_decay", 0.0)
        self.label_smoothing = _number(self.label_smoothing, "label_smoothing", 0.0, 1.0)
        self.max_train_samples = _optional_int(self.max_train_samples, "max_train_samples", 1)
        self.max_eval_samples = _optional_int(self.max_eval_samples, "max_eval_samples", 1)
        self.seed = _int(self.seed, "seed", 0)
        self.num_workers = _int(self.num_workers, "num_workers", 0)
        self.device = _device_name(self.device)
        for name in ("decode", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"training option {name} must be true or false, got {getattr(self, name)!r}"
                )
        if not isinstance(self.extra, dict):
            raise ValueError(f"training option extra must be a mapping, got {self.extra!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from a mapping of field values (unknown fields are named in the error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; valid: {sorted(known)}")
        return cls(**values)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"training option {name} must be a non-empty string, got {value!r}")
    return value


def _list(value: Any, name: str) -> list:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"training option {name} must be a list, got {value!r}")
    return list(value)


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(
            f"training option {name} must be an integer >= {low}, got {value!r} "
            f"({type(value).__name__})"
        )
    if value < low:
        raise ValueError(f"training option {name} must be an integer >= {low}, got {value}")
    return int(value)


def _optional_int(value: Any, name: str, low: int) -> int | None:
    return None if value is None else _int(value, name, low)


def _number(
    value: Any,
    name: str,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """A finite float in ``[low, high)`` (``(low, ...)`` when ``low_open``)."""
    span = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high})"
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"training option {name} must be a number in {span}, got {value!r}")
    v = float(value)
    if v < low or (low_open and v == low) or (high is not None and v >= high):
        raise ValueError(f"training option {name} must be a number in {span}, got {value!r}")
    return v


def _device_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"training option device must be a string, got {value!r}")
    if value == "auto":
        return value
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"training option device {value!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    return value


def resolve_device(device: str = "auto") -> torch.device:
    """The device to train on; a ValueError when this machine lacks it.

    ``auto``: this process's GPU (under torchrun, ``cuda:LOCAL_RANK``) when CUDA is
    available, else the CPU.
    """
    resolved = dist.local_device(device)
    if resolved.type == "cuda" and resolved.index is not None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if resolved.index >= count:
            raise ValueError(
                f"device {device!r} was asked for but this machine has {count} CUDA GPU(s): "
                "use --device cpu (or auto), or a GPU index below the count"
            )
    elif resolved.type not in ("cpu", "cuda"):
        backend = getattr(torch.backends, resolved.type, None)
        if backend is None or not backend.is_available():
            raise ValueError(f"device {device!r} is not available on this machine: use cpu")
    return resolved


# --------------------------------------------------------------------------- output


class OutputBusyError(FileExistsError):
    """Another process is training into the same checkpoint file."""


def check_output(output: str | os.PathLike) -> Path:
    """``output`` as a Path if a training checkpoint can be written there, else a ValueError
    (before any training is spent)."""
    path = Path(output)
    if path.suffix == ".safetensors":
        raise ValueError(
            f"cannot train into {path}: a training checkpoint holds the optimizer state for "
            "--resume, which .safetensors cannot store. Train into a .pt file, then export "
            "it with mrl_analysis.save_checkpoint(path.safetensors, load_model(path.pt))"
        )
    if path.is_dir():
        raise ValueError(f"cannot train into {path}: it is a folder; name a .pt file in it")
    return path


@contextlib.contextmanager
def output_lock(output: Path, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` for a whole training run.

    Another process training into the same file is refused with an :class:`OutputBusyError`
    naming it (``wait=False``), or waited for (``wait=True``, a resumed run: it then finds
    that run's checkpoint and continues or returns it).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    lock_path = output.with_name(f".{output.name}.lock")
    # Append mode: opening must never truncate a lock file another process holds.
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if not wait:
                raise OutputBusyError(
                    f"{output} is being trained by {holder} right now; wait for it to finish "
                    "(then --resume returns its result) or choose another output path"
                ) from None
            progress_write(f"{output} is being trained by {holder}; waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            fh.flush()
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _resume_state(output: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """The saved state to continue from (None: start afresh), or a clear error."""
    if not output.exists():
        return None
    if not resume:
        raise FileExistsError(
            f"{output} exists: pass resume=True (--resume) to continue it, "
            "or choose another output path"
        )
    state = load_checkpoint(output)
    saved = state.get("meta", {}).get("train_config") if isinstance(state, dict) else None
    if "train_state" not in state or not isinstance(saved, dict):
        raise ValueError(
            f"cannot resume {output}: it is not a training checkpoint of mrl-analysis (it has "
            "no optimizer state or training config, e.g. an exported or the authors' model). "
            "Train into another output path, or move this file away"
        )
    diff = config_differences(saved, dataclasses.asdict(cfg))
    if diff:
        raise ValueError(f"cannot resume {output}: its config differs in {diff} (saved, requested)")
    return state


# --------------------------------------------------------------------------- data


def _limit(bundle: DatasetBundle, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(bundle.dataset):
        return bundle.dataset
    # A stratified-enough fixed subset: a seeded permutation, not the first n samples.
    idx = np.random.default_rng(seed).permutation(len(bundle.dataset))[:n]
    return Subset(bundle.dataset, np.sort(idx).tolist())


@dataclass
class _Batches:
    """A split as training and evaluation read it: decoded in memory with a batched
    transform when it fits (``decoded`` set), else the dataset's per-image loader."""

    dataset: Dataset
    decoded: DecodedImages | None
    transform: BatchTransform | None

    @classmethod
    def of(cls, dataset: Dataset, transform: Any, decode: bool) -> _Batches:
        decoded = decode_images(dataset) if decode else None
        batched = None
        if decoded is not None:
            batched = BatchTransform.from_transform(transform, decoded.images.shape[1:])
        if batched is None:
            decoded = None
        return cls(dataset, decoded, batched)

    def __len__(self) -> int:
        return len(self.dataset)

    def iterate(
        self,
        indices: Sequence[int],
        batch_size: int,
        generator: torch.Generator | None,
        num_workers: int = 0,
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the samples ``indices``, in that order."""
        if self.decoded is not None and self.transform is not None:
            pick = torch.as_tensor(list(indices), dtype=torch.int64)
            return iterate_batches(self.decoded, pick, batch_size, self.transform, generator)
        return DataLoader(
            Subset(self.dataset, list(indices)), batch_size=batch_size, num_workers=num_workers
        )


def _seed(*parts: int) -> int:
    """A 63-bit seed for one (seed, epoch, rank, stream) combination."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(
    model: MatryoshkaModel, loader: Iterable, device: torch.device, progress: bool = False
) -> dict[int, float]:
    """Top-1 accuracy (a fraction in [0, 1]) at every nesting size of ``model`` over the
    ``(images, labels)`` batches of ``loader``."""
    correct, total = _count_correct(model, loader, device, progress, "eval")
    return {m: c / max(total, 1) for m, c in zip(model.nesting, correct, strict=True)}


def _count_correct(
    model: MatryoshkaModel,
    batches: Iterable,
    device: torch.device,
    progress: bool,
    desc: str,
    channels_last: bool = False,
    n_batches: int | None = None,
) -> tuple[list[int], int]:
    model.eval()
    correct = torch.zeros(len(model.nesting), dtype=torch.long)
    total = 0
    bar = progress_bar(batches, desc=desc, total=n_batches, unit="batch", disable=not progress)
    with torch.inference_mode():
        for x, y in bar:
            x = x.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            correct += (logits.argmax(-1).cpu() == y.unsqueeze(0)).sum(dim=1)
            total += len(y)
    return correct.tolist(), total


def _evaluate_shards(
    model: MatryoshkaModel,
    data: _Batches,
    batch_size: int,
    device: torch.device,
    progress: bool,
    desc: str,
    channels_last: bool,
) -> dict[int, float]:
    """Top-1 per size over all of ``data``: each process counts every world-size-th sample,
    the counts are summed (the same numbers as one process, whatever the world size)."""
    mine = range(dist.rank(), len(data), dist.world_size())
    batches = data.iterate(mine, batch_size, None)
    n_batches = -(-len(mine) // batch_size)
    correct, total = _count_correct(
        model, batches, device, progress, desc, channels_last, n_batches
    )
    gathered = dist.all_gather_objects((correct, total))
    correct = [sum(c[i] for c, _ in gathered) for i in range(len(model.nesting))]
    total = sum(t for _, t in gathered)
    return {m: c / max(total, 1) for m, c in zip(model.nesting, correct, strict=True)}


# --------------------------------------------------------------------------- training


def one_cycle(total_steps: int, warmup_fraction: float = WARMUP_FRACTION):
    """The learning-rate factor at each step of a one-cycle schedule of ``total_steps``.

    Cosine warm-up from ``START_LR_FACTOR`` to 1 over ``warmup_fraction`` of the steps (at
    least one), then cosine annealing to ``END_LR_FACTOR``: torch's ``OneCycleLR`` shape,
    defined for any number of steps (``OneCycleLR`` divides by zero when the warm-up rounds
    to a single step, e.g. 128 samples in batches of 32 for one epoch).
    """
    warmup = max(1, round(warmup_fraction * total_steps))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            t, start, end = step / warmup, START_LR_FACTOR, 1.0
        else:
            t, start, end = min(1.0, (step - warmup) / decay), 1.0, END_LR_FACTOR
        return end + (start - end) * (1 + math.cos(math.pi * t)) / 2

    return factor


def train(
    config: TrainConfig | dict,
    output: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train one model as ``config`` says and write its checkpoint to ``output``.

    With ``resume=True`` and an existing ``output`` from the same config, training
    continues after the last finished epoch (a finished run returns at once). Without
    it, an existing ``output`` is an error, so a finished model is never overwritten by
    accident. While it runs, ``output`` is locked: a second run into the same file is
    refused (or, with ``resume=True``, waits for the first and then continues it).

    Under torchrun every process calls this with the same arguments (module docstring).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    output = check_output(output)
    device = resolve_device(cfg.device)
    dist.init()
    with contextlib.ExitStack() as stack:
        failure: BaseException | None = None
        state = None
        if dist.is_main():
            try:
                # Waiting under torchrun would leave the other ranks in a collective that
                # times out; there the second run is refused instead.
                stack.enter_context(output_lock(output, wait=resume and not dist.is_distributed()))
                state = _resume_state(output, cfg, resume)
            except (OSError, ValueError) as err:
                failure = err
        failure = dist.broadcast_object(failure)
        if failure is not None:
            raise failure
        state = dist.broadcast_object(state)
        return _train(cfg, output, state, device, progress)


def _train(
    cfg: TrainConfig, output: Path, state: dict | None, device: torch.device, progress: bool
) -> Path:
    rank, world = dist.rank(), dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} (the global batch) does not split evenly over "
            f"{world} processes: use a multiple of {world}"
        )
    local_batch = cfg.batch_size // world
    if _done(state, cfg):
        return output
    show = progress and dist.is_main()

    torch.manual_seed(cfg.seed)
    train_set = get_dataset(
        cfg.dataset, "train", root=cfg.data_root, classes=cfg.classes, augment=True
    )
    eval_split = cfg.eval_split or DEFAULT_EVAL_SPLIT.get(cfg.dataset, "val")
    eval_set = get_dataset(cfg.dataset, eval_split, root=cfg.data_root, classes=cfg.classes)
    model = build_model(
        cfg.arch,
        len(train_set.class_names),
        cfg.kind,  # type: ignore[arg-type]
        cfg.nesting,
        ff_dim=cfg.ff_dim,
        in_channels=train_set.in_channels,
        stem=cfg.stem,  # type: ignore[arg-type]
    ).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    train_data = _Batches.of(
        _limit(train_set, cfg.max_train_samples, cfg.seed), train_set.transform, cfg.decode
    )
    eval_data = _Batches.of(
        _limit(eval_set, cfg.max_eval_samples, cfg.seed), eval_set.transform, cfg.decode
    )
    # Explicit replicas/rank: the same sampler (and the same shuffles) without torchrun.
    sampler = DistributedSampler(
        train_data.dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed * 1000
    )
    steps_per_epoch = -(-len(sampler) // local_batch)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, one_cycle(cfg.epochs * steps_per_epoch)
    )
    criterion = MatryoshkaCELoss(cfg.relative_importance, label_smoothing=cfg.label_smoothing)

    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        ts = state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        start_epoch = int(ts["epoch"])
        history = list(state["meta"].get("history", []))

    net: torch.nn.Module = model
    if dist.is_distributed():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    step = _step_function(net, criterion, optimizer, scheduler, cfg.compile)

    meta = {
        "dataset": cfg.dataset,
        "dataset_fingerprint": train_set.fingerprint,
        "eval_split": eval_split,
        "classes": list(train_set.class_ids),
        "train_config": dataclasses.asdict(cfg),
        "versions": library_versions(),
        "world_size": world,
    }
    name = output.stem
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)  # shuffles with seed * 1000 + epoch, on every rank alike
        torch.manual_seed(_seed(cfg.seed, epoch, rank, 0))  # dropout, per-image augmentation
        generator = torch.Generator().manual_seed(_seed(cfg.seed, epoch, rank, 1))
        batches = train_data.iterate(list(sampler), local_batch, generator, cfg.num_workers)
        running = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        bar = progress_bar(
            batches,
            desc=f"train · {name} epoch {epoch + 1}/{cfg.epochs}",
            total=steps_per_epoch,
            unit="step",
            disable=not show,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = step(x, y)
            running += loss.detach().double() * len(y)  # no per-step device sync
            seen += len(y)
            if show and seen % (20 * local_batch) < local_batch:
                bar.set_postfix_str(f"loss {float(running) / seen:.3f}")
        bar.close()
        losses = dist.all_gather_objects((float(running), seen))
        train_loss = sum(r for r, _ in losses) / max(1, sum(s for _, s in losses))
        # Every rank scores rank 0's model, the one the checkpoint holds.
        dist.broadcast_buffers(model)
        accuracy = _evaluate_shards(
            model,
            eval_data,
            2 * local_batch,
            device,
            show,
            f"eval · {name} epoch {epoch + 1}/{cfg.epochs}",
            cfg.channels_last,
        )
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "seconds": time.perf_counter() - t0,
                "val_top1": {str(m): a for m, a in accuracy.items()},
            }
        )
        if show:
            sizes = ", ".join(f"{m}:{100 * a:.1f}" for m, a in accuracy.items())
            progress_write(f"{name} epoch {epoch + 1}: val top-1 % per size  {sizes}")
        if dist.is_main():
            save_checkpoint(
                output,
                model,
                class_names=list(train_set.class_names),
                meta={**meta, "history": history, "metrics": history[-1]["val_top1"]},
                train_state={
                    "epoch": epoch + 1,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
            )
        dist.barrier()  # every rank returns only once the checkpoint is on disk
    return output


def _step_function(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    compile_model: bool,
):
    """``step(x, y) -> loss``: forward, backward and the optimizer and schedule steps."""
    forward = torch.compile(net) if compile_model else net

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = criterion(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss

    return step


def config_differences(saved: dict, requested: dict) -> dict[str, tuple]:
    """``{field: (saved, requested)}`` for the config fields that differ.

    ``data_root`` names a folder: another spelling of the same folder (relative vs absolute,
    ``..``) is the same data, so ``--data-root /abs/path`` still resumes or skips a run made
    with the default relative path. A field the saved config predates counts as its
    default (a checkpoint from before the field existed was trained that way).
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    diff = {
        k: (saved.get(k), v) for k, v in requested.items() if saved.get(k, defaults.get(k)) != v
    }
    roots = diff.get("data_root")
    if roots is not None and None not in roots:
        try:
            if Path(roots[0]).expanduser().resolve() == Path(roots[1]).expanduser().resolve():
                del diff["data_root"]
        except OSError:  # unresolvable: keep it as a difference
            pass
    return diff


def _finished(cfg: TrainConfig, output: Path) -> bool:
    """Whether ``output`` holds a finished run of ``cfg`` (a mismatch raises, as ``train``)."""
    return _done(_resume_state(output, cfg, resume=True), cfg)


def _done(state: dict | None, cfg: TrainConfig) -> bool:
    """Whether a saved training ``state`` has run all of ``cfg``'s epochs."""
    return state is not None and int(state["train_state"]["epoch"]) >= cfg.epochs


def _use_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_worker(cfg: TrainConfig, output: Path) -> str:
    """Train in a worker; return the line the sequential run would have ended with."""
    start = time.perf_counter()
    train(cfg, output, resume=True, progress=False)
    metrics = load_checkpoint(output)["meta"]["metrics"]
    sizes = ", ".join(f"{m}:{100 * a:.1f}" for m, a in metrics.items())
    seconds = time.perf_counter() - start
    return f"{output.stem}: trained in {seconds:.0f}s; val top-1 % per size  {sizes}"


def train_runs(
    runs: Mapping[str | os.PathLike, TrainConfig | dict],
    *,
    progress: bool = True,
    jobs: int | None = None,
) -> None:
    """Train (or finish, or skip when done) each config into its checkpoint path.

    On a CPU, models still to train run ``jobs`` at a time (default: one per core, at most
    4), each in a worker process with ``cores // jobs`` threads
    (:mod:`mrl_analysis.core.parallel`): a small network's step does not keep two threads
    busy, so on 2 cores the demo's five models train 1.6x sooner two at a time, one thread
    each, than one after the other (benchmarks/bench_demo.py; two models alone 1.2x: each
    worker starts an interpreter and decodes the data once). On a GPU,
    under torchrun, or with ``jobs=1`` they train one after the other in this process,
    sharing its decoded data (released at the end). The weights depend on the threads a
    model trained with (sums in another order), not on whether it trained side by side.
    """
    todo = {
        check_output(path): cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
        for path, cfg in runs.items()
    }
    for path in todo:
        path.parent.mkdir(parents=True, exist_ok=True)
    if dist.is_distributed() or any(resolve_device(c.device).type != "cpu" for c in todo.values()):
        jobs = 1
    pending = [path for path, cfg in todo.items() if not _finished(cfg, path)]
    jobs = parallel.n_jobs(jobs, len(pending))
    if jobs == 1:
        try:
            for path in pending:
                train(todo[path], path, resume=True, progress=progress)
        finally:
            forget_decoded()
        return
    with (
        parallel.worker_pool(jobs, _use_threads) as pool,
        progress_bar(
            total=len(pending),
            desc=f"train · {len(pending)} models, {jobs} at a time",
            unit="model",
            disable=not progress,
        ) as bar,
    ):
        for future in as_completed([pool.submit(_train_worker, todo[p], p) for p in pending]):
            line = future.result()
            if progress:
                progress_write(line)
            bar.update()


def train_many(
    configs: Mapping[str, TrainConfig | dict],
    out_dir: str | Path,
    *,
    only: Sequence[str] | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Train (or finish, or skip when done) each named config into ``out_dir/<name>.pt``
    (:func:`train_runs`, which says how they share the cores); return the paths."""
    paths = {name: Path(out_dir) / f"{name}.pt" for name in configs if not only or name in only}
    train_runs({paths[name]: configs[name] for name in paths}, progress=progress, jobs=jobs)
    return paths
