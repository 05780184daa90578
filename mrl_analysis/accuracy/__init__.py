"""Theme: accuracy per truncation size (linear heads, k-NN, post-hoc baselines)."""
