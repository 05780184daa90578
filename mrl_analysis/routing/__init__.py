"""Theme: routing samples to sizes (oracle, adaptive cascades, a learned router)."""
