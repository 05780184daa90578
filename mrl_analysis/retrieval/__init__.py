"""Theme: adaptive retrieval (shortlist with few dimensions, rerank with many)."""
