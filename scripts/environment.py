"""Write environment.yml (conda) from requirements.lock, so both pin the same packages.

    .venv/bin/python scripts/environment.py          # rewrite environment.yml
    .venv/bin/python scripts/environment.py --check  # exit 1 if it is out of date

Every pin of the lock (direct and transitive) goes into the pip section; the project itself
is installed editable. tests/app/test_environment.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The Python the lock was resolved with (major.minor).
PYTHON = "3.11"

HEADER = """\
# The same environment for conda users: `conda env create -f environment.yml`.
# Generated from requirements.lock by scripts/environment.py: do not edit by hand
# (make environment.yml regenerates it; tests/app/test_environment.py checks it).
name: mrl-analysis
channels:
  - conda-forge
dependencies:
  - python={python}
  - pip
  - pip:
"""


def lock_pins(lock: Path = ROOT / "requirements.lock") -> list[str]:
    """The ``name==version`` lines of the lock, in its order."""
    lines = (line.strip() for line in lock.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#") and "==" in line]


def render() -> str:
    """The text environment.yml should hold."""
    pins = "".join(f"      - {pin}\n" for pin in lock_pins())
    return HEADER.format(python=PYTHON) + pins + "      - -e .\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    target = ROOT / "environment.yml"
    wanted = render()
    if args.check:
        if target.read_text() != wanted:
            print(f"{target} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    target.write_text(wanted)
    print(f"wrote {target} ({len(lock_pins())} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
