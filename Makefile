# The README's two commands are `make demo` and `make test`; each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-tiny test lab lint bench clean-figures

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m mrl_analysis.cli demo

# Tiny-ImageNet (real 64 px photos, boxes): notebooks 01, 02, 04, 05; ~17 min on 2 CPU cores.
TINY_DATA ?= ../shared/data/tiny-imagenet-200
demo-tiny: setup
	$(PY) -m mrl_analysis.cli demo --dataset tiny-imagenet --data-root $(TINY_DATA)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-figures:
	rm -rf figures/*/ runs/
