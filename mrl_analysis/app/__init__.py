"""The application layer: command line, papermill batch runner, demos and their specs."""
