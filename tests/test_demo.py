"""The demo model sets and the Tiny-ImageNet demo's wiring, without training anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrl_analysis.app import cli, demo
from mrl_analysis.app.runner import check_batch, load_batch
from mrl_analysis.data.datasets import get_dataset, split_classes

ROOT = Path(__file__).resolve().parents[1]


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


def test_tiny_imagenet_batch_validates_against_the_notebooks():
    batch = load_batch(demo.TINY_BATCH)
    assert batch.name == "tiny-imagenet"
    resolved = check_batch(batch)
    assert {"gradcam_disagreement", "fewshot_fluid"} <= set(resolved)
    for params in resolved.values():
        assert params["dataset"] == "tiny-imagenet"
        assert params["data_root"] == str(demo.TINY_DATA_ROOT)
    fewshot = resolved["fewshot_fluid"]
    assert fewshot["eval_split"] == "val"
    assert set(fewshot["curve_sizes"]) <= set(demo.TINY_NESTING)
    assert max(fewshot["shots"]) + fewshot["queries"] <= 50  # val images per class
    assert resolved["gradcam_disagreement"]["split"] == "val"
    # The batch names the checkpoints the demo trains.
    full = {f"{demo.TINY_CHECKPOINT_DIR}/{n}.pt" for n in demo.tiny_imagenet_models()}
    assert set(fewshot["models"].values()) == full
    subset = {f"{demo.TINY_SUBSET_CHECKPOINT_DIR}/{n}.pt" for n in ("mrl", "ff-512")}
    assert set(fewshot["novel_models"].values()) == subset


def test_tiny_imagenet_batch_with_another_data_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # a batch given as a dict resolves against the current folder
    resolved = check_batch(load_batch(demo.tiny_imagenet_batch("/data/tin")))
    assert {p["data_root"] for p in resolved.values()} == {"/data/tin"}


def test_tiny_imagenet_model_sets(tmp_path):
    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    full = demo.tiny_imagenet_models(data_root=root)
    assert set(full) == {"mrl", "ff-512"}
    assert full["mrl"].nesting == demo.TINY_NESTING and full["mrl"].classes is None
    assert full["ff-512"].ff_dim == 512
    for cfg in full.values():
        assert (cfg.dataset, cfg.arch, cfg.stem) == ("tiny-imagenet", "resnet18", "imagenet")
        assert cfg.data_root == str(root) and cfg.epochs == demo.TINY_EPOCHS

    novel = demo.tiny_imagenet_novel_class_models(epochs=3, data_root=root)
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
    assert cli.main(["demo", "--dataset", "tiny-imagenet", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "tiny-imagenet-200.zip" in err
    assert cli.main(["demo", "--data-root", str(tmp_path)]) == 2
    assert "--data-root is for --dataset tiny-imagenet" in capsys.readouterr().err


def test_run_tiny_imagenet_wiring(tmp_path, monkeypatch):
    """train -> caches (train and val, plain and class-subset) -> the batch, all stubbed."""
    import pandas as pd

    import mrl_analysis.app.runner as runner
    import mrl_analysis.cache.experiment as experiment
    import mrl_analysis.fewshot.study as fewshot_study
    import mrl_analysis.models.training as training

    root = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    calls: dict[str, list] = {"train": [], "caches": [], "subset": [], "batch": []}

    def train_many(configs, out_dir, only=None):
        calls["train"].append((dict(configs), Path(out_dir)))
        return {n: Path(out_dir) / f"{n}.pt" for n in configs}

    monkeypatch.setattr(training, "train_many", train_many)
    monkeypatch.setattr(experiment, "build_caches", lambda *a, **k: calls["caches"].append((a, k)))
    monkeypatch.setattr(
        fewshot_study, "build_subset_caches", lambda *a, **k: calls["subset"].append((a, k))
    )

    def run_batch(batch, force=False):
        calls["batch"].append(batch)
        return pd.DataFrame({"status": ["ok"], "figures_dir": ["figures/tiny-imagenet/x"]})

    monkeypatch.setattr(runner, "run_batch", run_batch)
    monkeypatch.setattr(runner, "print_summary", lambda summary: None)

    assert demo.run_tiny_imagenet(root) == 0
    (full, full_dir), (novel, novel_dir) = calls["train"]
    assert full_dir == demo.TINY_CHECKPOINT_DIR and novel_dir == demo.TINY_SUBSET_CHECKPOINT_DIR
    assert all(c.classes is None for c in full.values())
    assert all(len(c.classes) == demo.TINY_N_PRETRAIN for c in novel.values())
    for (args, kwargs), folder in ((calls["caches"][0], full_dir), (calls["subset"][0], novel_dir)):
        models, dataset, splits = args
        assert models == {"MRL": folder / "mrl.pt", "FF-512": folder / "ff-512.pt"}
        assert (dataset, splits, kwargs["data_root"]) == ("tiny-imagenet", ["train", "val"], root)
    assert calls["batch"][0]["defaults"]["data_root"] == str(root)
