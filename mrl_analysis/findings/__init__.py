"""The paper's findings (a)-(h), checked on the models of one study (notebook 07).

Like the explorer, this package sits *above* the themes: it composes each theme's
``findings(...)`` function (accuracy: (a), (b); routing: (c), (d); superclass: (e), (h);
retrieval: (f); few-shot: (g)) into one table of :mod:`mrl_analysis.core.findings` rows.
No theme imports it.

* ``study.py``: :func:`~mrl_analysis.findings.study.paper_findings`, named caches → the
  findings table (the only module here that touches caches, through the themes);
* ``headlines.py``: one sentence per finding, with its numbers or the reason it does not hold;
* ``plots.py``: the compact figure, one row per finding (the only plotly importer here).
"""
