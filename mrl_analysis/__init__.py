"""mrl_analysis: an analysis workbench for Matryoshka Representation Learning."""

from mrl_analysis.models import MatryoshkaModel, build_model, default_nesting

__all__ = ["MatryoshkaModel", "build_model", "default_nesting"]
__version__ = "0.1.0"
