"""Embedding caches on disk: building them from a model and a dataset, and reading them back."""
