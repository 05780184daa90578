"""The interactive explorer: one image and one size slider over several themes."""
