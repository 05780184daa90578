"""Study specs: parsing, paths against the project root, the batch and notebook parameters."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from mrl_analysis.app.batch import check_batch, load_batch
from mrl_analysis.app.studies import list_studies, load_study, study_parameters, use_study

ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "mine",
    "dataset": "fashion-mnist",
    "eval_split": "test",
    "cache_root": "out/cache",
    "training": {"arch": "resnet18", "epochs": 1},
    "models": {
        "checkpoints": "ckpt/full",
        "train": {"Big": {"checkpoint": "big.pt", "kind": "mrl", "nesting": [2, 4, 8]}},
    },
    "batch": {
        "defaults": {"knob": 3},
        "notebooks": [{"name": "nb", "path": "nbs/nb.ipynb"}],
    },
}
PARAMS = "study = None\ndataset = None\nmodels = None\ncache_root = None\nknob = 1\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny project: pyproject.toml, one notebook and a study spec in a subfolder."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'tiny'\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python", "language": "python"}
    cell = nbformat.v4.new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, str(tmp_path / "nbs" / "nb.ipynb"))
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.yaml").write_text(yaml.safe_dump(SPEC))
    return tmp_path


def test_packaged_studies_resolve_against_the_project_not_the_cwd(tmp_path, monkeypatch):
    assert {"demo", "tiny-imagenet"} <= set(list_studies())
    monkeypatch.chdir(tmp_path)
    study = load_study("demo")
    assert study.root == ROOT
    assert study.models.paths()["MRL"] == ROOT / "data" / "checkpoints" / "fashion-mnist" / "mrl.pt"
    tiny = load_study("tiny-imagenet")
    assert tiny.data_root == ROOT.parent / "shared" / "data" / "tiny-imagenet-200"


def test_study_parameters_fill_only_what_is_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MRL_PROJECT_ROOT", raising=False)
    p = study_parameters("demo", check=False)
    assert (p.study, p.dataset, p.eval_split, p.data_root) == (
        "demo",
        "fashion-mnist",
        "test",
        None,
    )
    assert list(p.models) == ["MRL", "MRL-E", "FF-2", "FF-8", "FF-512"]
    assert p.models["MRL-E"] == str(ROOT / "data" / "checkpoints" / "fashion-mnist" / "mrl-e.pt")
    assert p.novel_models["FF-512"] == str(
        ROOT / "data" / "checkpoints" / "fashion-mnist-6" / "ff-512.pt"
    )
    assert p.cache_root == str(ROOT / "data" / "cache")
    given = study_parameters(
        "tiny-imagenet",
        models={"X": "x.pt"},
        cache_root="c",
        data_root="/d",
        eval_split="e",
        check=False,
    )
    # Given relative paths mean the project root too, not the kernel's working directory.
    assert (given.models, given.cache_root, given.data_root, given.eval_split) == (
        {"X": str(ROOT / "x.pt")},
        str(ROOT / "c"),
        "/d",
        "e",
    )
    assert given.dataset == "tiny-imagenet"
    assert study_parameters("tiny-imagenet", check=False).data_root == str(
        ROOT.parent / "shared" / "data" / "tiny-imagenet-200"
    )


def test_use_study_fills_a_notebooks_none_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MRL_PROJECT_ROOT", raising=False)
    namespace = {"study": "demo", "models": None, "split": None, "cache_root": "mine", "x": 1}
    use_study(namespace, check=False)
    assert namespace["split"] == "test" and namespace["cache_root"] == str(ROOT / "mine")
    assert namespace["models"]["MRL"] == str(ROOT / "data/checkpoints/fashion-mnist/mrl.pt")
    assert "dataset" not in namespace and namespace["x"] == 1


def test_a_missing_checkpoint_names_the_cwd_and_the_absolute_path(project, monkeypatch):
    monkeypatch.chdir(project / "nbs")  # where JupyterLab starts a notebook's kernel
    monkeypatch.delenv("MRL_PROJECT_ROOT", raising=False)
    spec = project / "studies" / "mine.yaml"
    with pytest.raises(FileNotFoundError) as info:
        use_study({"study": str(spec), "models": None})
    message = str(info.value)
    assert f"Big: {project / 'ckpt' / 'full' / 'big.pt'}" in message
    assert f"working directory {project / 'nbs'}" in message and "\n" not in message
    (project / "ckpt" / "full").mkdir(parents=True)
    (project / "ckpt" / "full" / "big.pt").write_bytes(b"")
    namespace = {"study": str(spec), "models": None, "data_root": "nowhere"}
    with pytest.raises(FileNotFoundError, match=f"data_root not found: {project / 'nowhere'}"):
        use_study(namespace)
    namespace["data_root"] = None
    assert use_study(namespace).models == {"Big": str(project / "ckpt" / "full" / "big.pt")}


def test_a_notebook_is_checked_only_for_the_checkpoints_it_declares(tmp_path, monkeypatch):
    """Notebook 01 declares `models` but not `novel_models`: given models that exist, it
    runs even where the study's class-subset checkpoints were never trained."""
    (tmp_path / "pyproject.toml").write_text("")  # a project where nothing was trained
    spec = tmp_path / "demo.yaml"
    spec.write_text((ROOT / "mrl_analysis" / "app" / "studies" / "demo.yaml").read_text())
    monkeypatch.delenv("MRL_PROJECT_ROOT", raising=False)
    (tmp_path / "m.pt").write_bytes(b"")
    mine = {"M": str(tmp_path / "m.pt")}
    assert use_study({"study": str(spec), "models": mine}).models == mine
    with pytest.raises(FileNotFoundError, match="novel MRL: .*fashion-mnist-6/mrl.pt"):
        use_study({"study": str(spec), "models": mine, "novel_models": None})


def test_project_root_from_the_environment(project, tmp_path_factory, monkeypatch):
    """A spec outside any project (e.g. a package installed into site-packages): its paths
    mean $MRL_PROJECT_ROOT, wherever the kernel starts; a wrong value is named."""
    elsewhere = tmp_path_factory.mktemp("loose")
    spec = elsewhere / "loose.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("MRL_PROJECT_ROOT", str(project))
    assert load_study(spec).root == project
    p = study_parameters(spec, cache_root="rel/cache", check=False)
    assert p.models == {"Big": str(project / "ckpt" / "full" / "big.pt")}
    assert p.cache_root == str(project / "rel" / "cache")
    monkeypatch.setenv("MRL_PROJECT_ROOT", str(project / "missing"))
    with pytest.raises(FileNotFoundError, match="MRL_PROJECT_ROOT=.*missing.* is not a folder"):
        load_study(spec)


def test_a_study_file_is_a_batch_of_its_own_project(project: Path, monkeypatch):
    monkeypatch.chdir(project / "nbs")  # not the project root: paths must not depend on it
    path = project / "studies" / "mine.yaml"
    study = load_study(path)
    assert study.root == project and study.ref == str(path)
    assert study.models.paths() == {"Big": project / "ckpt" / "full" / "big.pt"}
    assert study.novel_models is None and study.cache_splits == ("train", "test")
    assert study.train_configs()["big"].epochs == 1

    batch = load_batch(path)
    assert (batch.name, batch.root, batch.study) == ("mine", project, str(path))
    assert check_batch(batch, check_paths=False)["nb"] == {
        "dataset": "fashion-mnist",
        "models": {"Big": "ckpt/full/big.pt"},
        "cache_root": "out/cache",
        "study": str(path),
        "knob": 3,  # the batch's own defaults win over the study's
    }
    p = study_parameters(path, check=False)
    assert p.models == {"Big": str(project / "ckpt" / "full" / "big.pt")}


def test_bad_specs_are_refused(project: Path):
    def write(**changes) -> Path:
        path = project / "studies" / "bad.yaml"
        path.write_text(yaml.safe_dump({**SPEC, **changes}))
        return path

    with pytest.raises(ValueError, match="no study named 'dmeo'.*demo"):
        load_study("dmeo")
    with pytest.raises(FileNotFoundError, match="study file not found"):
        load_study(project / "nope.yaml")
    with pytest.raises(ValueError, match=r"unknown keys \['modles'\]"):
        load_study(write(modles={}))
    bad_field = {"checkpoints": "c", "train": {"Big": {"checkpoint": "b.pt", "knd": "mrl"}}}
    with pytest.raises(ValueError, match=r"models.train.Big: unknown training options \['knd'\]"):
        load_study(write(models=bad_field))
    no_file = {"checkpoints": "c", "train": {"Big": {"kind": "mrl"}}}
    with pytest.raises(ValueError, match="give its 'checkpoint' file name"):
        load_study(write(models=no_file))
    with pytest.raises(ValueError, match=r"missing keys \['eval_split'\]"):
        load_study(_without(project, "eval_split"))
    path = project / "studies" / "broken.yaml"
    path.write_text("name: x\nmodels:\n  train: [a, b\nbatch: {}\n")
    with pytest.raises(ValueError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}:4:6: invalid YAML: expected ',' or ']'")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="has no novel_class_models"):
        load_study(project / "studies" / "mine.yaml").train_configs(novel=True)


def _without(project: Path, key: str) -> Path:
    path = project / "studies" / "partial.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in SPEC.items() if k != key}))
    return path
