"""The interactive explorer: one model's eval set under a truncation-size slider.

The explorer composes several themes (per-size accuracy, superclasses, the interpretability
theme's disagreements and Grad-CAM), so it sits *above* the themes, beside the notebooks:
it may import them, and no theme imports it.

* ``study.py``: the inputs (``load_inputs``: model, eval split, embedding cache;
  ``sample_positions``) — the only module here that finds or opens caches and datasets;
* ``state.py``: ``ExplorerState``, the numbers at any size, vectorized and memoized;
* ``widget.py``: ``Explorer`` / ``explore``, the ipywidgets front end (HTML tables, PNG
  thumbnails, a plotly heat map; the summary line first, Grad-CAM on its own thread);
* ``plots.py``: the confusion heat map and the static figures of a headless run (the only
  plotly importer here).
"""
