"""The ``mrl-analysis`` command: train, embed, run notebooks, or a whole study's demo.

Every user error ends the command with one line on stderr, ``mrl-analysis <command>: error:
<what, where, how to fix>``, and exit status 2; ``--debug`` shows the traceback instead.
A word means the same in every subcommand: ``--only`` picks notebooks of a batch (``run``),
``--models`` picks models of a study (``demo``), ``-m/--model NAME=PATH`` names a
checkpoint (``embed``), ``--data-root`` is a dataset's folder, ``-o/--output`` is what the
command writes.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mrl_analysis.app.files import read_yaml, shown

#: The exceptions that report a user's mistake (bad value, missing or unusable file): shown
#: as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Named argument types: argparse reports "argument --x: <the message below>".


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{shown(text)} is not a valid UTF-8 name; rename the file or folder"
        ) from None
    return text


def path(text: str) -> Path:
    """A file or folder name (need not exist yet)."""
    return Path(_utf8(text)).expanduser()


def existing_path(text: str) -> Path:
    """A file or folder that exists."""
    found = path(text)
    if not found.exists():
        raise argparse.ArgumentTypeError(
            f"{shown(found)} not found (working directory {shown(Path.cwd())})"
        )
    return found


def checkpoint_output(text: str) -> Path:
    """Where training writes: a ``.pt`` file (it holds the training state for ``--resume``)."""
    out = path(text)
    if out.suffix != ".pt":
        raise argparse.ArgumentTypeError(
            f"{shown(out)}: training writes a .pt checkpoint (weights, config and the "
            "training state --resume needs); give a path ending in .pt"
        )
    return out


def named_checkpoint(text: str) -> tuple[str, Path]:
    """``NAME=PATH``: a display name and an existing checkpoint."""
    name, sep, where = text.partition("=")
    if not sep or not name.strip() or not where.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH, e.g. MRL=data/checkpoints/fashion-mnist/mrl.pt; got {text!r}"
        )
    return name.strip(), existing_path(where.strip())


def sizes(text: str) -> list[int]:
    """Comma-separated positive sizes: ``1,2,4,8``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive sizes, e.g. 1,2,4,8; got {text!r}"
        )
    return values


def names(text: str) -> list[str]:
    """Comma-separated names: ``a,b,c``."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return values


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {text!r}")
    return value


def integer(text: str) -> int:
    """A whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None


def positive_float(text: str) -> float:
    """A number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number above 0; got {text!r}")
    return value


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, available on this machine."""
    import torch

    kind, _, index = text.partition(":")
    if kind not in {"auto", "cpu", "cuda", "mps"} or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps; got {text!r}")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= int(index or 0):
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {count or 'no'} CUDA GPU(s) visible to torch; "
                "use --device cpu (or auto)"
            )
    return text


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is YAML: ``epochs=3``, ``nesting=[1,2,4]``, ``lr=0.1``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. epochs=3; got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(
            f"{key}: cannot read {raw!r} as a value (YAML: a number, text, [a, list])"
        ) from None
    return key.strip().replace("-", "_"), value


# Subcommands.

_TRAIN_FLAGS = (
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
)


def _check_resumable(output: Path) -> None:
    """``--resume`` continues one of our training checkpoints, nothing else."""
    from mrl_analysis.models.checkpoints import load_checkpoint

    if not output.exists():
        return  # nothing to continue: train() starts from scratch
    state = load_checkpoint(output)
    if "train_state" not in state:
        raise ValueError(
            f"--resume: {shown(output)} is not a training checkpoint of mrl-analysis (it has no "
            "training state to continue); drop --resume and choose a new -o to train anew"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from mrl_analysis.models.training import TrainConfig, train

    values: dict[str, Any] = {}
    if args.config:
        loaded = read_yaml(args.config) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{shown(args.config)}: expected a mapping of TrainConfig fields")
        values.update(loaded)
    for key in _TRAIN_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = str(value) if isinstance(value, Path) else value
    values.update(args.set or [])
    cfg = TrainConfig.from_dict(values)  # refuses bad values now, not after an epoch
    if args.resume:
        _check_resumable(args.output)
    out = train(cfg, args.output, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {shown(out)}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from mrl_analysis.cache.experiment import build_caches

    models: dict[str, Path] = {}
    for name, checkpoint in args.model:
        if name in models:
            raise ValueError(f"-m {name}=...: the name {name!r} is given twice; names are unique")
        models[name] = checkpoint
    caches = build_caches(
        models,
        args.dataset,
        args.split,
        cache_root=args.cache_root,
        data_root=args.data_root,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
    )
    for name, per_split in caches.items():
        for split, cache in per_split.items():
            print(f"{name} {split}: {shown(cache.path)} ({cache.num_samples} samples)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mrl_analysis.app.runner import print_summary, run_batch

    summary = run_batch(
        args.batch,
        only=args.only or None,
        runs_dir=args.runs_dir,
        figures_dir=args.figures_dir,
        force=args.force,
        allow_outside=args.allow_outside,
        jobs=args.jobs,
    )
    print_summary(summary)
    return 1 if (summary["status"] != "ok").any() else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mrl_analysis.app import demo

    study = args.study
    if args.profile is not None:
        from mrl_analysis.app.studies.profiles import apply_profile

        if Path(args.profile).suffix:  # a file: its YAML errors as one line, file:line:column
            read_yaml(args.profile)
        study = apply_profile(study, args.profile)
    return demo.run_study(
        study,
        data_root=args.data_root,
        epochs=args.epochs,
        models=args.models,
        force=args.force,
        jobs=args.jobs,
        started=args.started,
    )


def _cmd_import(args: argparse.Namespace) -> int:
    from mrl_analysis.cache.importer import import_embeddings

    query = args.query
    if query is not None:
        try:
            query = float(query)
        except ValueError:
            pass  # not a number: a file of a boolean mask or of row indices
    try:
        nesting = None if args.nesting is None else [int(v) for v in args.nesting.split(",")]
    except ValueError:
        raise ValueError(
            f"--nesting takes comma-separated sizes, e.g. 8,16,32; got {args.nesting!r}"
        ) from None
    caches = import_embeddings(
        args.features,
        args.labels,
        args.output,
        kind=args.kind,
        nesting=nesting,
        class_names=args.class_names,
        superclasses=args.superclasses,
        sample_ids=args.sample_ids,
        split=args.split,
        query=query,
        dataset=args.dataset,
        model_id=args.model_id,
        features_key=args.features_key,
        labels_key=args.labels_key,
        ids_key=args.ids_key,
        features_dtype=args.features_dtype,
        seed=args.seed,
    )
    for part, cache in caches.items():
        print(
            f"{part}: {cache.path} ({cache.num_samples} samples, d = {cache.feature_dim}, "
            f"{cache.num_classes} classes; no heads: feature-based analyses only)"
        )
    return 0


_FORCE_HELP = "run every notebook, also those whose inputs are unchanged since their last run"
_JOBS_HELP = (
    "notebooks run at once, their kernels sharing the cores (default: one per core, at most 4)"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``mrl-analysis`` argument parser (every subcommand)."""
    from mrl_analysis import __version__
    from mrl_analysis.app.studies import DEFAULT_STUDY, list_studies
    from mrl_analysis.app.studies.profiles import list_profiles

    parser = _Parser(
        prog="mrl-analysis",
        description="Train, embed, run notebooks, or a whole study's demo. A user error is "
        "one line and exit status 2 (--debug: with its traceback).",
    )
    parser.add_argument("--version", action="version", version=f"mrl-analysis {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an MRL / MRL-E / FF-k model")
    p.add_argument(
        "--output", "-o", required=True, type=checkpoint_output, help="checkpoint path (.pt)"
    )
    p.add_argument("--config", type=existing_path, help="YAML file of TrainConfig fields")
    p.add_argument("--dataset", help="a dataset name, e.g. fashion-mnist (default: the config's)")
    p.add_argument("--arch", help="torchvision model name, e.g. resnet18, resnet50")
    p.add_argument("--kind", choices=["mrl", "mrl-e", "ff"])
    p.add_argument("--nesting", type=sizes, help="comma-separated sizes, e.g. 1,2,4,8")
    p.add_argument("--ff-dim", dest="ff_dim", type=positive_int, help="FF-k: the size k")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", dest="batch_size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--seed", type=integer)
    p.add_argument("--device", type=device, help="auto (GPU if any), cpu, cuda, cuda:1, mps")
    p.add_argument("--data-root", dest="data_root", type=existing_path, help="dataset folder")
    p.add_argument("--stem", choices=["imagenet", "small"])
    p.add_argument("--max-train-samples", dest="max_train_samples", type=positive_int)
    p.add_argument("--classes", type=names, help="comma-separated class subset")
    p.add_argument(
        "--set",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="any other TrainConfig field; repeat for several",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="cache features and logits of checkpoints on a dataset")
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        type=named_checkpoint,
        metavar="NAME=PATH",
        help="a display name and its checkpoint; repeat for several",
    )
    p.add_argument("--dataset", required=True, help="a dataset name, e.g. fashion-mnist")
    p.add_argument("--split", nargs="+", default=["train", "test"], help="(default: train test)")
    p.add_argument(
        "--cache-root", dest="cache_root", type=path, default=Path("data/cache"),
        help="where caches go (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--data-root", dest="data_root", type=existing_path, help="dataset folder")
    p.add_argument(
        "--batch-size", dest="batch_size", type=positive_int, default=256,
        help="images per forward pass (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--device", type=device, default="auto",
        help="auto (default: this process's GPU if any, else cpu), cpu, cuda, cuda:1, mps; "
        "under torchrun auto and cuda mean each process's own GPU",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, choices=range(0, 65), default=0, metavar="N",
        help="DataLoader processes decoding images, per process (default: %(default)s)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("run", help="run notebooks headless (papermill) from a batch file")
    p.add_argument(
        "batch",
        nargs="?",
        type=existing_path,
        help="batch YAML or study spec (default: the demo study's batch)",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these notebooks of the batch")
    p.add_argument(
        "--runs-dir", dest="runs_dir", type=path,
        help="executed notebooks go here (default: the batch's, else runs)",
    )  # fmt: skip
    p.add_argument(
        "--figures-dir", dest="figures_dir", type=path,
        help="figures go here (default: the batch's, else figures)",
    )  # fmt: skip
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="allow --runs-dir / --figures-dir (or the batch's) outside the batch's folder",
    )
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    p.add_argument("--jobs", type=positive_int, metavar="N", help=_JOBS_HELP)
    p.set_defaults(func=_cmd_run)

    studies = ", ".join(list_studies())
    p = sub.add_parser("demo", help="train a study's models, embed, run its notebooks")
    p.add_argument(
        "--study",
        default=DEFAULT_STUDY,
        help=f"a packaged study ({studies}) or a study YAML file (default: %(default)s; "
        "make demo-tiny runs tiny-imagenet)",
    )
    p.add_argument(
        "--data-root",
        dest="data_root",
        type=path,  # the study checks it, naming the download when it is missing
        help="the dataset's folder (default: the study's; tiny-imagenet: "
        "../shared/data/tiny-imagenet-200 next to the repository)",
    )
    p.add_argument(
        "--profile",
        help=f"a training profile of the study ({', '.join(list_profiles())}) or a profile "
        "YAML file: other training values (e.g. a GPU, more epochs), with their own "
        "checkpoint and cache folders (default: none, the study's own values)",
    )
    p.add_argument("--epochs", type=positive_int, help="training epochs (default: the study's)")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="train and embed only these models of the study (display names or checkpoint "
        "stems; default: all)",
    )
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    p.add_argument(
        "--jobs", type=positive_int, metavar="N",
        help="trainings and notebooks run at once, sharing the cores (default: one per core, "
        "at most 4)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "import",
        help="turn embeddings you already have (.npy, .safetensors, Parquet/Arrow) into a cache",
        description="Write features [N, d] and their labels as a head-less embedding cache "
        "(OUTPUT/SPLIT, or OUTPUT/query and OUTPUT/database with --query) that k-NN, few-shot, "
        "FLUID, retrieval and the Matryoshka diagnostic read.",
    )
    p.add_argument("features", help="features file: .npy, .safetensors, .parquet, .arrow, .feather")
    p.add_argument(
        "--labels",
        help="labels file (.npy, .txt one per line; class indices or names); default: the "
        "label column / tensor of the features file",
    )
    p.add_argument("--output", "-o", required=True, help="folder for the cache(s)")
    p.add_argument(
        "--kind",
        choices=["mrl", "ff"],
        default="mrl",
        help="mrl: a Matryoshka embedding, analysed at every size of --nesting; ff: a "
        "fixed-size embedding, analysed at its full size (default: %(default)s)",
    )
    p.add_argument("--nesting", help="comma-separated sizes (default: 1,2,4,... up to d)")
    p.add_argument("--class-names", dest="class_names", help=".txt (one per line) or .json list")
    p.add_argument(
        "--superclasses", help=".json object mapping class names (or ids) to superclasses"
    )
    p.add_argument("--sample-ids", dest="sample_ids", help=".txt (one per line) or .npy")
    p.add_argument("--split", default="test", help="the split's name (default: %(default)s)")
    p.add_argument(
        "--query",
        help="a query/database division: a fraction of every class (e.g. 0.1) or a .npy / .txt "
        "of a boolean mask or of row indices",
    )
    p.add_argument("--dataset", help="dataset name recorded in the manifest")
    p.add_argument("--model-id", dest="model_id", help="model name (default: the output folder's)")
    p.add_argument("--features-key", dest="features_key", help="column / tensor of the features")
    p.add_argument("--labels-key", dest="labels_key", help="column / tensor of the labels")
    p.add_argument("--ids-key", dest="ids_key", help="column of the sample ids")
    p.add_argument(
        "--features-dtype",
        dest="features_dtype",
        choices=["float32", "float16"],
        default="float32",
        help="storage precision (default: %(default)s, exactly as given)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of a --query fraction (default: 0)")
    p.set_defaults(func=_cmd_import)
    return parser


def _message(err: BaseException) -> str:
    """The one line a user error is reported as."""
    if isinstance(err, UnicodeEncodeError):
        return (
            f"the name {shown(str(err.object)[:200])} is not valid UTF-8 ({err.reason}); "
            "rename the file or folder"
        )
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {shown(err.filename)}"
    return str(err) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit status (2 for a user error)."""
    started = time.perf_counter()  # `demo` reports its phases from the very start
    args = build_parser().parse_args(argv)
    args.started = started
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except USER_ERRORS as err:
        if args.debug:
            traceback.print_exc()
        print(f"mrl-analysis {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mrl-analysis {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
