"""The basics every layer shares, each defined once: input checks, softmax, head kinds,
the "cheapest size within tolerance" rule and the statistics behind error bars."""
