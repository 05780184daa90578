"""Theme: "How Matryoshka is this embedding?" — prefixes vs PCA and random dims (notebook 08)."""
