"""The demos' model sets and wiring (train → caches → batch), without training anything."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import needs_fashion_mnist

from mrl_analysis.app import cli, demo
from mrl_analysis.app.batch import check_batch, load_batch
from mrl_analysis.app.studies import load_study
from mrl_analysis.data.registry import get_dataset, split_classes

ROOT = Path(__file__).resolve().parents[2]


def _fake_tiny_imagenet(root: Path, n_classes: int = 200) -> Path:
    """The native layout with one (empty) val image per class: enough to list classes."""
    wnids = [f"n{i:08d}" for i in range(n_classes)]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text(
        "".join(f"{w}\tthing {i}, other\n" for i, w in enumerate(wnids))
    )
    lines = []
    for i, w in enumerate(wnids):
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(b"")
        lines.append(f"val_{i}.JPEG\t{w}\t1\t2\t30\t40\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def test_demo_study_is_the_documented_model_set():
    study = load_study("demo")
    nesting = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    configs = study.train_configs()
    assert list(configs) == ["mrl", "mrl-e", "ff-2", "ff-8", "ff-512"]
    assert [configs["mrl"].kind, configs["mrl-e"].kind] == ["mrl", "mrl-e"]
    assert configs["mrl"].nesting == configs["mrl-e"].nesting == nesting
    assert [configs[f"ff-{k}"].ff_dim for k in (2, 8, 512)] == [2, 8, 512]
    for cfg in configs.values():
        assert (cfg.dataset, cfg.arch, cfg.epochs, cfg.seed) == (
            "fashion-mnist",
            "shufflenet_v2_x0_5",
            1,
            0,
        )
        assert cfg.data_root is None and cfg.classes is None
    assert study.train_configs(epochs=5)["mrl"].epochs == 5
    assert study.models.checkpoints == ROOT / "data" / "checkpoints" / "fashion-mnist"
    assert study.novel_models.checkpoints == ROOT / "data" / "checkpoints" / "fashion-mnist-6"
    assert study.models.stems() == {
        "MRL": "mrl",
        "MRL-E": "mrl-e",
        "FF-2": "ff-2",
        "FF-8": "ff-8",
        "FF-512": "ff-512",
    }
    assert study.cache_splits == ("train", "test") and study.cache_root == ROOT / "data" / "cache"


@needs_fashion_mnist
def test_demo_novel_class_models_train_on_six_classes():
    novel = load_study("demo").train_configs(novel=True)
    expected, _ = split_classes(get_dataset("fashion-mnist", "test").class_ids, 6, seed=0)
    assert set(novel) == {"mrl", "ff-512"}
    assert novel["mrl"].nesting[0] == 1 and novel["ff-512"].ff_dim == 512
    assert all(cfg.classes == expected for cfg in novel.values())


def test_tiny_imagenet_batch_validates_against_the_notebooks():
    study = load_study("tiny-imagenet")
    batch = load_batch(study.batch_spec())
    assert batch.name == "tiny-imagenet" and batch.root == ROOT and batch.study == "tiny-imagenet"
    resolved = check_batch(batch, check_paths=False)
    assert {"gradcam_disagreement", "fewshot_fluid"} <= set(resolved)
    for params in resolved.values():
        assert params["dataset"] == "tiny-imagenet"
        assert params["data_root"] == str(ROOT.parent / "shared" / "data" / "tiny-imagenet-200")
    fewshot = resolved["fewshot_fluid"]
    assert fewshot["eval_split"] == "val"
    assert set(fewshot["curve_sizes"]) <= set(study.train_configs()["mrl"].nesting)
    assert max(fewshot["shots"]) + fewshot["queries"] <= 50  # val images per class
    assert resolved["gradcam_disagreement"]["split"] == "val"
    # The batch names the checkpoints the demo trains, relative to the project root.
    assert fewshot["models"] == {
        "MRL": "data/checkpoints/tiny-imagenet/mrl.pt",
        "FF-16": "data/checkpoints/tiny-imagenet/ff-16.pt",
        "FF-512": "data/checkpoints/tiny-imagenet/ff-512.pt",
    }
    assert fewshot["novel_models"] == {
        "MRL": "data/checkpoints/tiny-imagenet-100/mrl.pt",
        "FF-512": "data/checkpoints/tiny-imagenet-100/ff-512.pt",
    }
    # The spec file itself is a batch file too.
    assert check_batch(load_batch(study.path), check_paths=False) == resolved


@pytest.mark.parametrize("study", ["demo", "tiny-imagenet"])
def test_both_demos_state_the_findings_and_run_the_diagnostic(study):
    """Issue 14: both demo batches end with the findings table; the runner validates the
    new notebooks' parameters like the others'."""
    resolved = check_batch(load_batch(load_study(study).batch_spec()), check_paths=False)
    expected = ["oracle_routing", "adaptive_retrieval", "findings", "matryoshka_diagnostic"]
    assert set(expected) <= set(resolved)
    assert list(resolved)[-2:] == ["findings", "matryoshka_diagnostic"]
    if study == "tiny-imagenet":  # its nesting starts at 4: no sizes below it
        nesting = load_study(study).train_configs()["mrl"].nesting
        assert resolved["matryoshka_diagnostic"]["min_dim"] == nesting[0]
        assert resolved["adaptive_retrieval"]["min_dim"] == nesting[0]


def test_tiny_imagenet_batch_with_another_data_root():
    spec = load_study("tiny-imagenet").batch_spec("/data/tin")
    resolved = check_batch(load_batch(spec), check_paths=False)
    assert {p["data_root"] for p in resolved.values()} == {"/data/tin"}


def test_tiny_imagenet_model_sets(tmp_path):
    study = load_study("tiny-imagenet")
    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    full = study.train_configs(data_root=root)
    assert set(full) == {"mrl", "ff-16", "ff-512"}
    assert full["mrl"].nesting == [4, 8, 16, 32, 64, 128, 256, 512]
    assert full["mrl"].classes is None and full["ff-512"].ff_dim == 512
    for cfg in full.values():
        assert (cfg.dataset, cfg.arch, cfg.stem) == (
            "tiny-imagenet",
            "shufflenet_v2_x0_5",
            "imagenet",
        )
        assert cfg.data_root == str(root) and (cfg.epochs, cfg.batch_size) == (4, 128)

    novel = study.train_configs(novel=True, epochs=3, data_root=root)
    ids = get_dataset("tiny-imagenet", "val", root=root).class_ids
    expected, _ = split_classes(ids, 100, seed=0)
    assert set(novel) == {"mrl", "ff-512"}
    for cfg in novel.values():
        assert cfg.classes == expected and cfg.epochs == 3


def test_check_tiny_imagenet_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Tiny-ImageNet at .*nowhere.*--data-root"):
        demo.check_tiny_imagenet(tmp_path / "nowhere")
    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200", n_classes=3)
    assert demo.check_tiny_imagenet(root) == root


def test_cli_demo_tiny_imagenet_without_data(tmp_path, capsys):
    args = ["demo", "--study", "tiny-imagenet", "--data-root", str(tmp_path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "tiny-imagenet-200.zip" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture
def stubbed(monkeypatch) -> dict[str, list]:
    """Training, caching and the batch run replaced by recorders."""
    import mrl_analysis.app.runner as runner
    import mrl_analysis.cache.experiment as experiment
    import mrl_analysis.models.training as training

    calls: dict[str, list] = {"train": [], "caches": [], "subset": [], "batch": []}

    def train_runs(runs, jobs=None):
        # {checkpoint folder: {stem: config}}, one entry per call
        folders: dict[Path, dict] = {}
        for path, cfg in runs.items():
            folders.setdefault(Path(path).parent, {})[Path(path).stem] = cfg
        calls["train"].append(folders)

    monkeypatch.setattr(training, "train_runs", train_runs)
    monkeypatch.setattr(experiment, "build_caches", lambda *a, **k: calls["caches"].append((a, k)))
    monkeypatch.setattr(
        experiment, "build_subset_caches", lambda *a, **k: calls["subset"].append((a, k))
    )

    def run_batch(batch, force=False, jobs=None):
        calls["batch"].append(batch)
        return pd.DataFrame({"status": ["ok"], "figures_dir": ["figures/x/y"], "reused": [True]})

    monkeypatch.setattr(runner, "run_batch", run_batch)
    monkeypatch.setattr(runner, "print_summary", lambda summary: None)
    return calls


def test_run_tiny_imagenet_wiring(tmp_path, stubbed):
    """train -> caches (train and val, plain and class-subset) -> the batch, all stubbed."""
    study = load_study("tiny-imagenet")
    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    assert demo.run_study("tiny-imagenet", data_root=root) == 0
    (folders,) = stubbed["train"]  # both model sets in one pool
    full_dir, novel_dir = study.models.checkpoints, study.novel_models.checkpoints
    assert list(folders) == [full_dir, novel_dir]
    full, novel = folders[full_dir], folders[novel_dir]
    assert all(c.classes is None for c in full.values())
    assert all(len(c.classes) == 100 for c in novel.values())
    for (args, kwargs), folder in (
        (stubbed["caches"][0], full_dir),
        (stubbed["subset"][0], novel_dir),
    ):
        models, dataset, splits = args
        small = {"FF-16": folder / "ff-16.pt"} if folder == full_dir else {}
        assert models == {"MRL": folder / "mrl.pt", **small, "FF-512": folder / "ff-512.pt"}
        assert (dataset, splits, kwargs["data_root"]) == ("tiny-imagenet", ["train", "val"], root)
        assert kwargs["cache_root"] == ROOT / "data" / "cache"
    assert stubbed["batch"][0]["defaults"] == {"data_root": str(root)}


@needs_fashion_mnist  # the class-subset models' classes come from the data
def test_run_demo_wiring(stubbed, capsys):
    """The demo trains, caches and runs what its study names; --models takes either name,
    and each phase prints its time."""
    assert demo.run_study("demo", models=["MRL-E", "ff-8"]) == 0
    (folders,) = stubbed["train"]
    full_dir = ROOT / "data" / "checkpoints" / "fashion-mnist"
    assert list(folders) == [full_dir] and set(folders[full_dir]) == {"mrl-e", "ff-8"}
    (models, dataset, splits), _ = stubbed["caches"][0]
    assert models == {"MRL-E": full_dir / "mrl-e.pt", "FF-8": full_dir / "ff-8.pt"}
    assert (dataset, splits) == ("fashion-mnist", ["train", "test"])
    batch = load_batch(stubbed["batch"][0])
    assert (batch.name, batch.study, batch.entries[0].name) == ("demo", "demo", "explore")
    assert "data_root" not in batch.study_parameters and not batch.defaults
    ff = batch.study_parameters["models"]["FF-512"]
    assert ff == "data/checkpoints/fashion-mnist/ff-512.pt"
    out = capsys.readouterr().out
    for phase in ("train", "cache", "notebooks"):
        assert re.search(rf"\[demo\] {phase}: done in \d+\.\ds", out), out
    assert re.search(r"\[demo\] total \d+\.\ds \(start-up .*train .*cache .*notebooks", out)


def test_demo_models_are_validated_before_anything_happens(stubbed, tmp_path, capsys):
    with pytest.raises(ValueError) as info:
        demo.run_study("demo", models=["MRL", "XYZ"])
    message = str(info.value)
    assert "study 'demo' has no model named 'XYZ'" in message
    assert "MRL-E (mrl-e)" in message and "FF-512 (ff-512)" in message
    assert stubbed["train"] == [] and stubbed["caches"] == []  # nothing trained or written
    assert cli.main(["demo", "--models", "XYZ"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrl-analysis demo: error: study 'demo' has no model named 'XYZ'")
    assert len(err.strip().splitlines()) == 1


def test_demo_profile_trains_and_runs_the_profiled_study(stubbed, tmp_path, capsys):
    """`demo --profile` swaps the training values and moves checkpoints and caches aside."""
    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    args = ["demo", "--study", "tiny-imagenet", "--profile", "tiny-imagenet-cuda"]
    assert cli.main([*args, "--data-root", str(root)]) == 0
    (folders,) = stubbed["train"]
    assert {cfg.device for configs in folders.values() for cfg in configs.values()} == {"cuda"}
    assert [f.name for f in folders] == ["tiny-imagenet-cuda", "tiny-imagenet-100-cuda"]
    _, kwargs = stubbed["caches"][0]
    assert kwargs["cache_root"].name == "cache-cuda"
    batch = stubbed["batch"][0]
    assert batch["name"] == "tiny-imagenet-cuda"
    assert batch["defaults"]["models"]["MRL"] == "data/checkpoints/tiny-imagenet-cuda/mrl.pt"

    assert cli.main(["demo", "--profile", "tiny-imagenet-cuda"]) == 2  # a profile of another study
    err = capsys.readouterr().err
    assert "is for study 'tiny-imagenet', not 'demo'" in err and len(err.strip().splitlines()) == 1
    assert len(stubbed["train"]) == 1  # the first run's: none for the refused one


def test_a_broken_profile_file_is_one_line(stubbed, tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("study: demo\ntraining: {epochs: [2\n")
    assert cli.main(["demo", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:1: invalid YAML" in err and len(err.strip().splitlines()) == 1
    assert stubbed["train"] == []


def test_the_demo_ends_with_the_findings_table(tmp_path, stubbed, monkeypatch, capsys):
    import mrl_analysis.app.runner as runner
    from mrl_analysis.core.findings import finding, findings_table, unmeasured

    rows = [
        finding("a", "MRL ≥ FF at small sizes (linear)", "MRL − FF", 0.02, 0.01, 0.03),
        finding("b", "MRL 1-NN above baselines", "MRL − SVD", -0.05, -0.07, -0.03),
        unmeasured("g", "few-shot saturates earlier", "log2 steps", "no few-shot run"),
    ]
    folder = tmp_path / "findings"
    folder.mkdir()
    findings_table(rows).to_csv(folder / "findings.csv", index=False)
    other = tmp_path / "other"  # a notebook without a findings table
    other.mkdir()
    monkeypatch.setattr(
        runner,
        "run_batch",
        lambda batch, force=False, jobs=None: pd.DataFrame(
            {"status": ["ok", "ok"], "figures_dir": [str(other), str(folder)], "reused": [True] * 2}
        ),
    )
    assert demo.run_study("demo", models=["MRL"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    start = next(i for i, line in enumerate(out) if "the paper's findings" in line)
    assert str(folder / "findings.csv") in out[start]
    assert out[start + 1].strip() == "1 of 3 findings hold, 1 do not, 1 cannot be measured here"
    assert out[start + 2].split()[:2] == ["(a)", "holds"]
    assert "+0.02 [+0.01, +0.03]" in out[start + 2]
    assert "does not hold" in out[start + 3] and "-0.05 [-0.07, -0.03]" in out[start + 3]
    assert out[-1].split()[:5] == ["(g)", "cannot", "be", "measured", "here"]  # the last line
