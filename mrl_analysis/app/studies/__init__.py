"""Study specs: one YAML file per study says what it trains, caches and runs.

A study (``demo``: Fashion-MNIST; ``tiny-imagenet``) is one file ``<name>.yaml`` in this
folder (or any path) with these keys::

    name: demo
    dataset: fashion-mnist          # a get_dataset name
    data_root: null                 # the dataset's folder; null: its default location
    eval_split: test                # the labelled split the analyses evaluate on
    cache_root: data/cache          # embedding caches
    cache_splits: [train, test]     # the splits the demo embeds
    training: {arch: resnet18, epochs: 2, seed: 0}  # TrainConfig fields all models share
    models:                         # the study's models, trained on every class
      checkpoints: data/checkpoints/fashion-mnist   # their folder
      train:                        # display name: checkpoint file + own TrainConfig fields
        MRL: {checkpoint: mrl.pt, kind: mrl, nesting: [1, 2, 4, 8]}
        FF-8: {checkpoint: ff-8.pt, kind: ff, ff_dim: 8}
    novel_class_models:             # optional: models trained on a class subset
      checkpoints: data/checkpoints/fashion-mnist-6
      pretrain_classes: {count: 6, seed: 0}   # split_classes(class ids, count, seed)
      train: {MRL: {checkpoint: mrl.pt, kind: mrl, nesting: [1, 2, 4, 8]}}
    batch:                          # the notebooks to run: a batch file's keys (no name/root)
      figure_formats: [html, png]
      defaults: {}                  # optional: more parameters for every notebook
      notebooks: [...]

Relative paths resolve against the study's project root, never against the current directory
of whoever reads it: for a spec file, the nearest folder at or above it holding a
``pyproject.toml``; for a packaged study, the project this package lives in (a source
checkout or editable install). Where that finds nothing (a package installed into
site-packages), ``$MRL_PROJECT_ROOT`` names the project, then the nearest project at or
above the current directory, then the current directory itself
(:mod:`mrl_analysis.core.paths`).

The study's batch (:meth:`Study.batch_spec`; or any batch file saying ``study: <name>``)
gives every notebook that declares them the parameters (:meth:`Study.parameters`)
``dataset``, ``data_root`` (when set), ``models`` (display name → checkpoint),
``novel_models``, ``cache_root`` and ``eval_split`` from the spec, and ``study`` (its name,
or its spec's path); ``make demo`` trains the same models (:meth:`Study.train_configs`).
A notebook run by hand says ``study = "demo"`` and ``models = None`` in its parameters cell
and fills the ``None`` values with :func:`use_study` — the same values whether the kernel
starts in ``notebooks/`` (JupyterLab), in the project root (the runner) or anywhere else
(plain papermill). Relative paths the notebook is *given* resolve against
``$MRL_PROJECT_ROOT`` when set (the runner sets it to the batch root, ``make lab`` to the
repository), else against the study's project root; a checkpoint or data folder that is not
there is reported with the working directory and the absolute path looked for.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mrl_analysis.app.files import read_yaml, shown
from mrl_analysis.core.paths import env_project_root, find_project_root
from mrl_analysis.models.training import TrainConfig

STUDIES_DIR = Path(__file__).parent
DEFAULT_STUDY = "demo"

_STUDY_KEYS = (
    "name",
    "dataset",
    "data_root",
    "eval_split",
    "cache_root",
    "cache_splits",
    "training",
    "models",
    "novel_class_models",
    "batch",
)
_MODEL_SET_KEYS = ("checkpoints", "train", "pretrain_classes")
_BATCH_KEYS = ("figure_formats", "runs_dir", "figures_dir", "defaults", "notebooks")


def list_studies() -> list[str]:
    """The names of the packaged studies."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def study_file(study: str | os.PathLike) -> Path:
    """The spec file of ``study``: a packaged study's name, or a path to a YAML file."""
    text = str(study)
    if isinstance(study, str) and "/" not in text and not text.endswith((".yaml", ".yml")):
        path = STUDIES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ValueError(f"no study named {text!r}; packaged studies: {list_studies()}")
        return path
    path = Path(study).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    return path


@dataclass(frozen=True)
class ModelSet:
    """Named models trained into one folder: display name → TrainConfig fields."""

    checkpoints: Path
    files: dict[str, str]
    configs: dict[str, dict[str, Any]]
    #: ``(count, seed)`` of :func:`~mrl_analysis.data.registry.split_classes` for a class
    #: subset, None for every class.
    pretrain_classes: tuple[int, int] | None = None

    def paths(self) -> dict[str, Path]:
        """Display name → checkpoint path."""
        return {name: self.checkpoints / file for name, file in self.files.items()}

    def stems(self) -> dict[str, str]:
        """Display name → checkpoint file stem (the names ``train_many`` and ``--only`` use)."""
        return {name: Path(file).stem for name, file in self.files.items()}


@dataclass(frozen=True)
class Study:
    """A parsed study spec (see the module docstring); every path is absolute."""

    name: str
    path: Path
    root: Path
    dataset: str
    eval_split: str
    cache_root: Path
    cache_splits: tuple[str, ...]
    models: ModelSet
    training: dict[str, Any] = field(default_factory=dict)
    data_root: Path | None = None
    novel_models: ModelSet | None = None
    batch: dict[str, Any] = field(default_factory=dict)

    def train_configs(
        self,
        *,
        novel: bool = False,
        epochs: int | None = None,
        data_root: str | os.PathLike | None = None,
    ) -> dict[str, TrainConfig]:
        """Checkpoint stem → the :class:`TrainConfig` of each model (``novel``: the
        class-subset models, their ``classes`` drawn from the dataset's class ids).
        ``epochs`` and ``data_root`` replace the spec's."""
        models = self.novel_models if novel else self.models
        if models is None:
            raise ValueError(f"study {self.name!r} has no novel_class_models")
        root = data_root if data_root is not None else self.data_root
        common = {"dataset": self.dataset, **self.training}
        if root is not None:
            common["data_root"] = str(root)
        if epochs is not None:
            common["epochs"] = int(epochs)
        if models.pretrain_classes is not None:
            from mrl_analysis.data.registry import get_dataset, split_classes

            count, seed = models.pretrain_classes
            ids = get_dataset(self.dataset, self.eval_split, root=root).class_ids
            common["classes"] = split_classes(ids, count, seed=seed)[0]
        stems = models.stems()
        return {
            stems[name]: TrainConfig.from_dict({**common, **copy.deepcopy(fields)})
            for name, fields in models.configs.items()
        }

    def parameters(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The notebook parameters the study gives every batch of it (module docstring);
        paths relative to ``relative_to`` (default: the study root) when under it."""
        base = self.root if relative_to is None else relative_to

        def rel(path: Path) -> str:
            return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

        params: dict[str, Any] = {"study": self.ref, "dataset": self.dataset}
        if self.data_root is not None:
            params["data_root"] = rel(self.data_root)
        params["models"] = {n: rel(p) for n, p in self.models.paths().items()}
        if self.novel_models is not None:
            params["novel_models"] = {n: rel(p) for n, p in self.novel_models.paths().items()}
        params["cache_root"] = rel(self.cache_root)
        params["eval_split"] = self.eval_split
        return params

    def batch_spec(self, data_root: str | os.PathLike | None = None) -> dict[str, Any]:
        """The study's batch as a batch-file dict (:mod:`mrl_analysis.app.batch`): its
        ``study`` key gives the notebooks the study's :meth:`parameters`, under the batch's
        own ``defaults``; ``data_root`` replaces the spec's."""
        defaults = dict(self.batch.get("defaults") or {})
        if data_root is not None:
            defaults["data_root"] = str(data_root)
        spec = {k: v for k, v in self.batch.items() if k != "defaults"}
        return {
            "name": self.name,
            "root": str(self.root),
            "study": self.ref,
            **spec,
            "defaults": defaults,
        }

    @property
    def ref(self) -> str:
        """What :func:`load_study` takes to load this study again: a name or a path."""
        packaged = STUDIES_DIR / f"{self.name}.yaml"
        return self.name if self.path == packaged.absolute() else str(self.path)


def _check_keys(found: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in found if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed keys: {', '.join(allowed)}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, not {type(value).__name__}")
    return dict(value)


def _model_set(raw: Any, root: Path, common: dict[str, Any], where: str) -> ModelSet:
    raw = _mapping(raw, where)
    _check_keys(raw, _MODEL_SET_KEYS, where)
    if "checkpoints" not in raw or not raw.get("train"):
        raise ValueError(f"{where}: give 'checkpoints' (a folder) and 'train' (the models)")
    files, configs = {}, {}
    for name, fields in _mapping(raw["train"], f"{where}.train").items():
        fields = _mapping(fields, f"{where}.train.{name}")
        if "checkpoint" not in fields:
            raise ValueError(f"{where}.train.{name}: give its 'checkpoint' file name")
        files[str(name)] = str(fields.pop("checkpoint"))
        try:  # now, not after hours of training the models before it
            TrainConfig.from_dict({**common, **fields})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}.train.{name}: {err}") from None
        configs[str(name)] = fields
    pretrain = None
    if raw.get("pretrain_classes") is not None:
        subset = _mapping(raw["pretrain_classes"], f"{where}.pretrain_classes")
        _check_keys(subset, ("count", "seed"), f"{where}.pretrain_classes")
        pretrain = (int(subset["count"]), int(subset.get("seed", 0)))
    return ModelSet(_resolve(root, raw["checkpoints"]), files, configs, pretrain)


def _resolve(root: Path, path: str | os.PathLike) -> Path:
    # normpath, not resolve: "../shared/data" stays readable and symlinks stay as named.
    return Path(os.path.normpath(root / Path(path).expanduser()))


def load_study(study: str | os.PathLike = DEFAULT_STUDY) -> Study:
    """Parse a study spec: a packaged study's name (``"demo"``) or a YAML file's path."""
    path = study_file(study)
    spec = read_yaml(path)
    where = shown(path)
    spec = _mapping(spec, f"{where}: a study spec")
    _check_keys(spec, _STUDY_KEYS, where)
    missing = [k for k in ("dataset", "eval_split", "models", "batch") if k not in spec]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    root = find_project_root(path.parent)
    batch = _mapping(spec["batch"], f"{where}: batch")
    _check_keys(batch, _BATCH_KEYS, f"{where}: batch")
    training = _mapping(spec.get("training") or {}, f"{where}: training")
    common = {"dataset": spec["dataset"], **training}
    novel = spec.get("novel_class_models")
    return Study(
        name=str(spec.get("name", path.stem)),
        path=path,
        root=root,
        dataset=str(spec["dataset"]),
        eval_split=str(spec["eval_split"]),
        cache_root=_resolve(root, spec.get("cache_root", "data/cache")),
        cache_splits=tuple(spec.get("cache_splits") or ("train", spec["eval_split"])),
        models=_model_set(spec["models"], root, common, f"{where}: models"),
        training=training,
        data_root=None if spec.get("data_root") is None else _resolve(root, spec["data_root"]),
        novel_models=None if novel is None else _model_set(novel, root, common, f"{where}: novel"),
        batch=batch,
    )


@dataclass(frozen=True)
class StudyParameters:
    """A notebook's study parameters, each one given or else the study's."""

    study: str
    dataset: str
    models: dict[str, str]
    novel_models: dict[str, str] | None
    cache_root: str
    data_root: str | None
    eval_split: str


def study_parameters(
    study: str | os.PathLike = DEFAULT_STUDY,
    *,
    dataset: str | None = None,
    models: Mapping[str, str | os.PathLike] | None = None,
    novel_models: Mapping[str, str | os.PathLike] | None = None,
    cache_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    eval_split: str | None = None,
    check: bool = True,
) -> StudyParameters:
    """A notebook's parameters with every ``None`` replaced by the study's value.

    In a notebook's parameters cell: ``study = "demo"``, ``models = None`` (likewise
    ``dataset``, ``cache_root``, ``data_root``...); then::

        p = study_parameters(study, dataset=dataset, models=models, cache_root=cache_root,
                             data_root=data_root)

    Every path comes back absolute, so the notebook works from any folder: the study's
    resolved against its project root, given relative ones against ``$MRL_PROJECT_ROOT``
    (else the study's project root). ``check``: raise ``FileNotFoundError`` when a checkpoint
    or the data folder is missing, naming the working directory and each absolute path.
    """
    spec = load_study(study)
    base = env_project_root() or spec.root

    def absolute(path: str | os.PathLike) -> str:
        return os.path.normpath(base / Path(path).expanduser())

    def named(paths: Mapping[str, str | os.PathLike]) -> dict[str, str]:
        return {str(name): absolute(p) for name, p in paths.items()}

    novel = None if spec.novel_models is None else named(spec.novel_models.paths())
    root = spec.data_root if data_root is None else data_root
    params = StudyParameters(
        study=spec.name,
        dataset=spec.dataset if dataset is None else dataset,
        models=named(spec.models.paths() if models is None else models),
        novel_models=novel if novel_models is None else named(novel_models),
        cache_root=absolute(spec.cache_root if cache_root is None else cache_root),
        data_root=None if root is None else absolute(root),
        eval_split=spec.eval_split if eval_split is None else eval_split,
    )
    if check:
        _check_files(params, base)
    return params


#: How each packaged study's checkpoints are made.
_TRAIN_COMMANDS = {"demo": "`make demo`", "tiny-imagenet": "`make demo-tiny`"}


def _check_files(params: StudyParameters, base: Path) -> None:
    """One ``FileNotFoundError`` line for every missing checkpoint and data folder."""
    missing = {name: p for name, p in params.models.items() if not Path(p).exists()}
    missing.update(
        (f"novel {name}", p)
        for name, p in (params.novel_models or {}).items()
        if not Path(p).exists()
    )
    if missing:
        listed = ", ".join(f"{name}: {shown(p)}" for name, p in missing.items())
        raise FileNotFoundError(
            f"checkpoints not found: {listed} (working directory {shown(Path.cwd())}; relative "
            f"paths resolve against {shown(base)}). Train them first "
            f"({_TRAIN_COMMANDS.get(params.study, '`mrl-analysis train ...`')}), or pass "
            "`models` naming existing checkpoints"
        )
    if params.data_root is not None and not Path(params.data_root).is_dir():
        raise FileNotFoundError(
            f"data_root not found: {shown(params.data_root)} (working directory "
            f"{shown(Path.cwd())}; relative paths resolve against {shown(base)}); pass "
            "`data_root` naming the dataset's folder"
        )


#: Notebook parameter names a study fills, and the :class:`StudyParameters` field of each.
_NOTEBOOK_FIELDS = {
    "dataset": "dataset",
    "models": "models",
    "novel_models": "novel_models",
    "cache_root": "cache_root",
    "data_root": "data_root",
    "eval_split": "eval_split",
    "split": "eval_split",
}


def use_study(namespace: dict[str, Any], *, check: bool = True) -> StudyParameters:
    """Fill a notebook's study parameters that are ``None``: ``use_study(globals())``.

    Reads ``study`` and whichever of ``dataset``, ``models``, ``novel_models``,
    ``cache_root``, ``data_root``, ``eval_split`` / ``split`` the namespace defines, replaces
    each ``None`` with the study's value and every path with its absolute form
    (:func:`study_parameters`, which also checks that the checkpoints exist when ``check``)
    and returns them all.
    """
    study = namespace.get("study", DEFAULT_STUDY)
    if not isinstance(study, str | os.PathLike):
        raise TypeError(
            f"study must be a study name or a spec file, got {type(study).__name__}: did an "
            "import in the notebook rebind the name `study`?"
        )
    given = {f: namespace[n] for n, f in _NOTEBOOK_FIELDS.items() if n in namespace}
    filled = study_parameters(study, **given, check=False)
    if check:
        # Only what the notebook declares must exist: a notebook without `novel_models`
        # runs without the study's class-subset checkpoints.
        _check_files(
            replace(
                filled,
                novel_models=filled.novel_models if "novel_models" in given else None,
                data_root=filled.data_root if "data_root" in given else None,
            ),
            env_project_root() or load_study(study).root,
        )
    for name, field_name in _NOTEBOOK_FIELDS.items():
        if name in namespace:
            namespace[name] = getattr(filled, field_name)
    return filled
