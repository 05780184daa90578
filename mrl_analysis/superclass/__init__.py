"""Theme: superclass and per-class accuracy across sizes."""
