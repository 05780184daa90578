"""``python -m mrl_analysis.cli``: the command line, like ``mrl-analysis``.

The code lives in :mod:`mrl_analysis.app.cli`; this module keeps the documented module path
(``torchrun … -m mrl_analysis.cli train``) short.
"""

from mrl_analysis.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
