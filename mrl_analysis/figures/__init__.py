"""What every figure shares: the style, the size axis, saving a figure with its table."""
