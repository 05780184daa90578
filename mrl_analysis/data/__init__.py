"""Datasets, their fingerprints, WordNet and the superclass resolver (the lowest layer)."""
