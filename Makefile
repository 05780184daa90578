# The README's two commands are `make demo` and `make test`; each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-tiny test lab lint bench clean-figures

setup:
	@bash scripts/setup.sh

# Each phase (train, cache, notebooks) prints its time; a warm re-run takes seconds.
demo: setup
	$(PY) -m mrl_analysis.cli demo

# Tiny-ImageNet (real 64 px photos, boxes): the study mrl_analysis/app/studies/tiny-imagenet.yaml.
TINY_DATA ?= ../shared/data/tiny-imagenet-200
demo-tiny: setup
	$(PY) -m mrl_analysis.cli demo --study tiny-imagenet --data-root $(TINY_DATA)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Kernels start in notebooks/; the notebooks find the project (and data/) on their own,
# MRL_PROJECT_ROOT only makes it explicit.
lab: setup
	MRL_PROJECT_ROOT=$(CURDIR) $(VENV)/bin/jupyter lab notebooks/

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The conda environment is generated from the lock (tests/app/test_environment.py checks it).
environment.yml: requirements.lock scripts/environment.py
	$(PY) scripts/environment.py

clean-figures:
	rm -rf figures/*/ runs/
