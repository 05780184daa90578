"""``python -m mrl_analysis``: the command line."""

from mrl_analysis.app.cli import main

raise SystemExit(main())
