"""Shared fixtures: paths to ../shared data and small real Fashion-MNIST models."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY_IMAGENET = SHARED / "data" / "tiny-imagenet-200"
FIXTURES = SHARED / "fixtures" / "official-checkpoints"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: A short but real training run: enough to be clearly above chance at every size.
TINY_TRAIN = {
    "dataset": "fashion-mnist",
    "arch": "resnet18",
    "nesting": [1, 2, 4, 8, 512],
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.05,
    "max_train_samples": 16000,
    "max_eval_samples": 1000,
    "seed": 0,
}


def have_fashion_mnist() -> bool:
    import os

    candidates = [FASHION_MNIST]
    if os.environ.get("MRL_DATA_DIR"):
        base = Path(os.environ["MRL_DATA_DIR"])
        candidates += [base, base / "fashion-mnist"]
    return any((c / "train-images-idx3-ubyte.gz").exists() for c in candidates)


needs_fashion_mnist = pytest.mark.skipif(
    not have_fashion_mnist(),
    reason="Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist)",
)
needs_tiny_imagenet = pytest.mark.skipif(
    not TINY_IMAGENET.exists(), reason=f"{TINY_IMAGENET} not present"
)


@pytest.fixture(scope="session")
def tiny_fmnist_models(tmp_path_factory) -> dict[str, Path]:
    """MRL, MRL-E and FF-512 checkpoints from one short real Fashion-MNIST run each."""
    if not have_fashion_mnist():
        pytest.skip("Fashion-MNIST not available")
    from mrl_analysis.models.training import train

    out = tmp_path_factory.mktemp("fmnist-models")
    specs = {
        "mrl": {"kind": "mrl"},
        "mrl-e": {"kind": "mrl-e"},
        "ff-512": {"kind": "ff", "ff_dim": 512, "nesting": None},
    }
    return {
        name: train({**TINY_TRAIN, **spec}, out / f"{name}.pt", progress=False)
        for name, spec in specs.items()
    }


def run_tiny_notebook(
    models: dict[str, Path], tmp_path: Path, path: str, parameters: dict | None = None
) -> Path:
    """Run one notebook through the batch runner on :func:`tiny_fmnist_models` (MRL, MRL-E,
    FF-512); assert it succeeded and return the folder of its figures."""
    from mrl_analysis.app.runner import run_batch

    batch = {
        "name": "tiny",
        "root": str(ROOT),
        "runs_dir": str(tmp_path / "runs"),
        "figures_dir": str(tmp_path / "figures"),
        "defaults": {
            "models": {
                "MRL": str(models["mrl"]),
                "MRL-E": str(models["mrl-e"]),
                "FF-512": str(models["ff-512"]),
            },
            "cache_root": str(tmp_path / "cache"),
        },
        "notebooks": [{"name": "nb", "path": path, "parameters": parameters or {}}],
    }
    summary = run_batch(batch, progress=False, allow_outside=True)  # outputs under tmp_path
    assert list(summary["status"]) == ["ok"], summary["error"].tolist()
    return tmp_path / "figures" / "tiny" / "nb"
