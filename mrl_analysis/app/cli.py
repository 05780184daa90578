"""The ``mrl-analysis`` command: train, embed, run notebooks, or the whole demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml


def _parse_value(text: str):
    """``key=value`` values are YAML scalars/lists: ``nesting=[1,2,4]``, ``epochs=3``."""
    return yaml.safe_load(text)


def _cmd_train(args: argparse.Namespace) -> int:
    from mrl_analysis.models.training import TrainConfig, train

    values = {}
    if args.config:
        values.update(yaml.safe_load(Path(args.config).read_text()) or {})
    for key in (
        "dataset",
        "arch",
        "kind",
        "nesting",
        "ff_dim",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "device",
        "data_root",
        "stem",
        "max_train_samples",
        "classes",
    ):
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    for item in args.set or []:
        key, _, raw = item.partition("=")
        values[key.replace("-", "_")] = _parse_value(raw)
    cfg = TrainConfig.from_dict(values)
    out = train(cfg, args.output, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from mrl_analysis.cache.experiment import build_caches

    models = dict(item.partition("=")[::2] for item in args.model)
    caches = build_caches(
        models,
        args.dataset,
        args.split,
        cache_root=args.cache_root,
        data_root=args.data_root,
        batch_size=args.batch_size,
    )
    for name, per_split in caches.items():
        for split, cache in per_split.items():
            print(f"{name} {split}: {cache.path} ({cache.num_samples} samples)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mrl_analysis.app.runner import print_summary, run_batch

    summary = run_batch(
        args.batch,
        only=args.only or None,
        runs_dir=args.runs_dir,
        figures_dir=args.figures_dir,
        force=args.force,
    )
    print_summary(summary)
    return 1 if (summary["status"] != "ok").any() else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mrl_analysis.app import demo

    t0 = time.perf_counter()
    common = {"epochs": args.epochs, "only": args.only, "started": t0, "force": args.force}
    if args.dataset == "tiny-imagenet":
        return demo.run_tiny_imagenet(args.data_root, **common)
    if args.data_root is not None:
        raise ValueError(
            "--data-root is for --dataset tiny-imagenet; the fashion-mnist demo finds "
            "its data itself (or set MRL_DATA_DIR)"
        )
    return demo.run_demo(**common)


_FORCE_HELP = "run every notebook, also those whose inputs are unchanged since their last run"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrl-analysis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an MRL / MRL-E / FF-k model")
    p.add_argument("--output", "-o", required=True, help="checkpoint path (.pt)")
    p.add_argument("--config", help="YAML file of TrainConfig fields")
    p.add_argument("--dataset")
    p.add_argument("--arch", help="torchvision model name, e.g. resnet18, resnet50")
    p.add_argument("--kind", choices=["mrl", "mrl-e", "ff"])
    p.add_argument(
        "--nesting",
        type=lambda s: [int(v) for v in s.split(",")],
        help="comma-separated sizes, e.g. 1,2,4,8",
    )
    p.add_argument("--ff-dim", dest="ff_dim", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--stem", choices=["imagenet", "small"])
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int)
    p.add_argument("--classes", type=lambda s: s.split(","), help="comma-separated class subset")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig field"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="cache features and logits of checkpoints on a dataset")
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a named checkpoint; repeat for several",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", nargs="+", default=["train", "test"])
    p.add_argument("--cache-root", dest="cache_root", default="data/cache")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("run", help="run notebooks headless (papermill) from a batch file")
    p.add_argument(
        "batch", nargs="?", help="batch YAML or study spec (default: the demo study's batch)"
    )
    p.add_argument("--only", nargs="*", help="only these entries of the batch")
    p.add_argument("--runs-dir", dest="runs_dir")
    p.add_argument("--figures-dir", dest="figures_dir")
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="train a study's models, embed, run its notebooks")
    p.add_argument(
        "--dataset",
        choices=["fashion-mnist", "tiny-imagenet"],
        default="fashion-mnist",
        help="fashion-mnist (default: `make demo`, the study mrl_analysis/app/studies/demo.yaml) "
        "or tiny-imagenet (`make demo-tiny`: notebooks 01, 02, 04, 05 of the study "
        "mrl_analysis/app/studies/tiny-imagenet.yaml)",
    )
    p.add_argument(
        "--data-root",
        dest="data_root",
        help="tiny-imagenet only: the tiny-imagenet-200 folder (default: the study's, "
        "../shared/data/tiny-imagenet-200 relative to the repository root)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="training epochs (default: the study's: 2 on fashion-mnist, 1 on tiny-imagenet)",
    )
    p.add_argument(
        "--only", nargs="*", help="only these demo models (checkpoint stems or display names)"
    )
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"mrl-analysis {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
