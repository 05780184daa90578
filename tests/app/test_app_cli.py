"""The command line: every user error is one line with exit status 2, named argument types,
checked NAME=PATH, a --version, defaults in help, one meaning per option word."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat
import pytest

from mrl_analysis import __version__
from mrl_analysis.app import cli

NOT_UTF8 = b"caf\xe9.yaml".decode("utf-8", "surrogateescape")  # a Latin-1 file name


def _error(argv: list[str], capsys) -> str:
    """The one error line ``argv`` gives (exit status 2, nothing else on stderr)."""
    with pytest.raises(SystemExit) as info:
        status = cli.main(argv)
        raise SystemExit(status)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"mrl-analysis {__version__}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["embed", "-m", "MRL", "--dataset", "x"], "expected NAME=PATH, e.g. MRL="),
        (["embed", "-m", "MRL=nowhere.pt", "--dataset", "x"], "nowhere.pt not found (working"),
        (["train", "-o", "x.pt", "--nesting", "1,two"], "expected comma-separated positive sizes"),
        (["train", "-o", "x.pt", "--epochs", "0"], "expected a whole number of at least 1"),
        (["train", "-o", "x.pt", "--lr", "nan"], "expected a number above 0"),
        (["train", "-o", "x.pt", "--set", "epochs"], "expected KEY=VALUE"),
        (["train", "-o", "x.safetensors"], "training writes a .pt checkpoint"),
        (["train", "-o", "x.pt", "--device", "tpu"], "expected auto, cpu, cuda, cuda:N or mps"),
        (["run", NOT_UTF8], "caf\\udce9.yaml is not a valid UTF-8 name"),
        (["demo", "--only", "MRL"], "unrecognized arguments: --only MRL"),
        (["run", "--models=MRL"], "unrecognized arguments: --models"),
        (["run", "--jobs", "0"], "expected a whole number of at least 1"),
        (["demo", "--jobs", "two"], "expected a whole number of at least 1"),
    ],
)
def test_argument_errors_are_one_named_line(argv, expected, capsys):
    line = _error(argv, capsys)
    assert expected in line and "<lambda>" not in line
    assert line.startswith("mrl-analysis") and line.endswith("--help)")


def test_no_gpu_is_said_before_training(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _error(["train", "-o", "x.pt", "--device", "cuda"], capsys)
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_library_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    batch = tmp_path / "b.yaml"
    batch.write_text("name: b\nnotebooks: [nb.ipynb\n")
    line = _error(["run", str(batch)], capsys)
    assert line.startswith(f"mrl-analysis run: error: {batch}:3:1: invalid YAML")
    assert cli.main(["--debug", "run", str(batch)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_outside_folders_need_allow_outside(tmp_path, capsys):
    root = tmp_path / "project"
    (root / "nbs").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    nbformat.write(nbformat.v4.new_notebook(), str(root / "nbs" / "nb.ipynb"))
    batch = root / "b.yaml"
    batch.write_text("name: b\nnotebooks: [nbs/nb.ipynb]\n")
    line = _error(["run", str(batch), "--figures-dir", str(tmp_path / "pictures")], capsys)
    assert "is outside the batch root" in line and "--allow-outside" in line
    assert not (tmp_path / "pictures").exists()


def test_resume_needs_a_training_checkpoint(tmp_path, capsys):
    from mrl_analysis.models.checkpoints import save_checkpoint
    from mrl_analysis.models.network import build_model

    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, build_model("resnet18", 3, "mrl", nesting=[2, 4], stem="small"))
    argv = ["train", "-o", str(plain), "--resume", "--dataset", "fashion-mnist", "--kind", "mrl"]
    line = _error(argv, capsys)
    assert f"--resume: {plain} is not a training checkpoint" in line


def test_help_shows_defaults_without_markup():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "`" not in parser.format_help()
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert "`" not in text, f"{name} --help has RST markup"
    embed = subparsers.choices["embed"].format_help()
    assert re.search(r"\(default:\s+data/cache\)", embed) and re.search(
        r"\(default:\s+256\)", embed
    )
    demo = subparsers.choices["demo"].format_help()
    assert re.search(r"\(default:\s+demo;", demo) and "--models" in demo and "--only" not in demo
    assert "--only" in subparsers.choices["run"].format_help()


def test_a_named_checkpoint_is_parsed(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    assert cli.named_checkpoint(f"MRL={ckpt}") == ("MRL", ckpt)
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=PATH"):
        cli.named_checkpoint(f"={ckpt}")
    assert cli.key_value("nesting=[1, 2]") == ("nesting", [1, 2])
    assert cli.key_value("max-train-samples=10") == ("max_train_samples", 10)
    assert Path("a") == cli.path("a")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("epochs=abc", "epochs must be an integer"), ("label_smoothing=2", "label_smoothing")],
)
def test_bad_training_values_stop_before_training(setting, expected, tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", "-o", str(out), "--dataset", "fashion-mnist", "--set", setting]
    line = _error(argv, capsys)
    assert line.startswith("mrl-analysis train: error: ") and expected in line
    assert not out.exists() and not list(tmp_path.iterdir())
