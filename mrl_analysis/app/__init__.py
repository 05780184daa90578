"""The application layer, above every theme: command line, batch runs, demos, study specs.

* ``studies/``: one YAML spec per study (dataset, models to train, caches, notebooks) and
  its loader (``load_study``, ``study_parameters`` for notebooks' parameters cells);
* ``batch.py``: batch files parsed and their parameters checked against the notebooks;
* ``runner.py``: papermill runs of a batch, summary, reuse of unchanged runs, outputs
  replaced only by a successful run, small executed notebooks;
* ``demo.py``: ``make demo`` / ``make demo-tiny``: train, cache, run a study;
* ``cli.py``: ``mrl-analysis train | embed | run | demo | import``;
* ``files.py``: YAML with one-line errors, printable file names, the "inside the batch
  root" rule for the folders the runner writes.
"""
