"""The library versions recorded with every checkpoint and cache (provenance, not keys)."""

from __future__ import annotations

import platform

import numpy as np


def library_versions() -> dict[str, str]:
    """Versions of Python, torch, torchvision, numpy and mrl_analysis."""
    import torch
    import torchvision

    import mrl_analysis

    return {
        "mrl_analysis": mrl_analysis.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
