"""Training MRL, MRL-E and FF-k models on a registered dataset.

One checkpoint file per run, rewritten atomically after every epoch with everything a
resume needs (optimizer, scheduler, RNG states, metrics so far). ``resume=True`` picks up
after the last finished epoch and, with the same config, ends bit-identical to an
uninterrupted run on the same machine: every epoch seeds its own shuffling and the global
RNG (used by augmentation) from ``(seed, epoch)``, so no RNG state needs saving.

Per-epoch validation accuracy is stored as a fraction in [0, 1] per nesting size
(``meta["history"][i]["val_top1"]`` and, for the last epoch, ``meta["metrics"]``, keyed by
the size as a string); the progress line shows it in percent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from mrl_analysis.core.versions import library_versions
from mrl_analysis.data.bundle import DatasetBundle
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_checkpoint, save_checkpoint
from mrl_analysis.models.loss import MatryoshkaCELoss
from mrl_analysis.models.network import MatryoshkaModel, Stem, build_model

#: Split used for per-epoch validation when the config names none.
DEFAULT_EVAL_SPLIT = {
    "fashion-mnist": "test",
    "cifar100": "test",
    "tiny-imagenet": "val",
    "imagenet": "val",
    "folder": "val",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint)."""

    dataset: str = "fashion-mnist"
    arch: str = "resnet18"
    kind: str = "mrl"
    nesting: list[int] | None = None
    ff_dim: int | None = None
    relative_importance: list[float] | None = None
    classes: list[str] | None = None
    data_root: str | None = None
    eval_split: str | None = None
    stem: Stem = "imagenet"
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
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; valid: {sorted(known)}")
        return cls(**values)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _limit(bundle: DatasetBundle, n: int | None, seed: int):
    if n is None or n >= len(bundle.dataset):
        return bundle.dataset
    # A stratified-enough fixed subset: a seeded permutation, not the first n samples.
    idx = np.random.default_rng(seed).permutation(len(bundle.dataset))[:n]
    return Subset(bundle.dataset, np.sort(idx).tolist())


@torch.inference_mode()
def evaluate(
    model: MatryoshkaModel, loader: DataLoader, device: torch.device, progress: bool = False
) -> dict[int, float]:
    """Top-1 accuracy (a fraction in [0, 1]) at every nesting size of ``model`` over ``loader``."""
    model.eval()
    correct = torch.zeros(len(model.nesting), dtype=torch.long)
    total = 0
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
        logits = model(x.to(device))
        correct += (logits.argmax(-1).cpu() == y.unsqueeze(0)).sum(dim=1)
        total += len(y)
    return {m: c / max(total, 1) for m, c in zip(model.nesting, correct.tolist(), strict=True)}


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
    accident.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    output = Path(output)
    state = None
    if output.exists():
        if not resume:
            raise FileExistsError(
                f"{output} exists: pass resume=True (--resume) to continue it, "
                "or choose another output path"
            )
        state = load_checkpoint(output)
        saved = state.get("meta", {}).get("train_config")
        diff = {} if saved is None else config_differences(saved, dataclasses.asdict(cfg))
        if diff:
            raise ValueError(
                f"cannot resume {output}: its config differs in {diff} (saved, requested)"
            )

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
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
        stem=cfg.stem,
    ).to(device)

    train_data = _limit(train_set, cfg.max_train_samples, cfg.seed)
    eval_loader = DataLoader(
        _limit(eval_set, cfg.max_eval_samples, cfg.seed),
        batch_size=2 * cfg.batch_size,
        num_workers=cfg.num_workers,
    )
    steps_per_epoch = -(-len(train_data) // cfg.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.25
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
        if start_epoch >= cfg.epochs:
            return output

    meta = {
        "dataset": cfg.dataset,
        "dataset_fingerprint": train_set.fingerprint,
        "eval_split": eval_split,
        "classes": list(train_set.class_ids),
        "train_config": dataclasses.asdict(cfg),
        "versions": library_versions(),
    }
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        epoch_seed = cfg.seed * 1000 + epoch
        torch.manual_seed(epoch_seed)
        shuffle = torch.Generator().manual_seed(epoch_seed)
        loader = DataLoader(
            train_data,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=shuffle,
            num_workers=cfg.num_workers,
            drop_last=False,
        )
        t0 = time.perf_counter()
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"{cfg.kind} epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        accuracy = evaluate(model, eval_loader, device, progress)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": running / max(seen, 1),
                "seconds": time.perf_counter() - t0,
                "val_top1": {str(m): a for m, a in accuracy.items()},
            }
        )
        if progress:
            sizes = ", ".join(f"{m}:{100 * a:.1f}" for m, a in accuracy.items())
            tqdm.write(f"epoch {epoch + 1}: val top-1 % per size  {sizes}")
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
    return output


def config_differences(saved: dict, requested: dict) -> dict[str, tuple]:
    """``{field: (saved, requested)}`` for the config fields that differ.

    ``data_root`` names a folder: another spelling of the same folder (relative vs absolute,
    ``..``) is the same data, so ``--data-root /abs/path`` still resumes or skips a run made
    with the default relative path.
    """
    diff = {k: (saved.get(k), v) for k, v in requested.items() if saved.get(k) != v}
    roots = diff.get("data_root")
    if roots is not None and None not in roots:
        try:
            if Path(roots[0]).expanduser().resolve() == Path(roots[1]).expanduser().resolve():
                del diff["data_root"]
        except OSError:  # unresolvable: keep it as a difference
            pass
    return diff


def train_many(
    configs: dict[str, TrainConfig | dict],
    out_dir: str | Path,
    *,
    only: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Train (or finish, or skip when done) each named config into ``out_dir/<name>.pt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, cfg in configs.items():
        if only and name not in only:
            continue
        paths[name] = train(cfg, out_dir / f"{name}.pt", resume=True, progress=progress)
    return paths
