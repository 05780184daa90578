"""The default demo: Fashion-MNIST models → embedding caches → the default batch.

The model set is MRL, MRL-E and FF-k at a spread of k, all on a torchvision ResNet18
with a 1-channel input. Fashion-MNIST has 10 classes, so the interesting part of the
accuracy-vs-size curve is 1-8 dims: the nesting starts at 1.
"""

from __future__ import annotations

from pathlib import Path

from mrl_analysis.training import TrainConfig

DATASET = "fashion-mnist"
ARCH = "resnet18"
NESTING = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
FF_SIZES = [2, 8, 32, 512]
CHECKPOINT_DIR = Path("data/checkpoints") / DATASET


def demo_models(epochs: int = 2) -> dict[str, TrainConfig]:
    """Named training configs of the demo models (``mrl``, ``mrl-e``, ``ff-<k>``)."""
    common = {"dataset": DATASET, "arch": ARCH, "epochs": epochs, "seed": 0}
    models = {
        "mrl": TrainConfig(kind="mrl", nesting=NESTING, **common),
        "mrl-e": TrainConfig(kind="mrl-e", nesting=NESTING, **common),
    }
    for k in FF_SIZES:
        models[f"ff-{k}"] = TrainConfig(kind="ff", ff_dim=k, **common)
    return models
