# airpeer: every target installs what it needs first (uv, venvs, Airflow), so a fresh clone works.
# Pieces live in mk/*.mk, one file per concern:
#   mk/env.mk    install: uv, .venv (Airflow 3.3 + Dagster + dbt + airpeer), .venvs/airflow2 (Airflow 2.11)
#   mk/demo.mk   demo, run-dag, clean, screenshots (examples/tutorial)
#   mk/bench.mk  bench, bench-tiny (benchmarks/)
#   mk/soak.mk   soak (reliability soak run)
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

include $(sort $(wildcard $(ROOT)/mk/*.mk))

.PHONY: help lint typecheck test test-unit check-wheel

help:
	@echo "make demo    - the peered tutorial: Airflow 3.3 on :8080, Dagster on :3000 (Ctrl-C stops both)"
	@echo "make test    - lint, types and the whole suite, real Airflow 2.11 and 3.3 included"
	@echo "make bench   - benchmarks against real Airflow, writes BENCHMARKS.md"
	@echo "make soak    - long reliability run, appends its figures to BENCHMARKS.md"

lint: install
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check src tests

typecheck: install
	$(VENV_BIN)/mypy

# The wheel users install must carry py.typed (PEP 561), or their mypy sees airpeer as untyped. Builds with uv
# (hatchling fetched from PyPI in an isolated build env) into a temporary directory.
check-wheel: install
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
		cd "$(ROOT)" && UV_PYTHON_DOWNLOADS=never $(UV) build --wheel --quiet --out-dir "$$out" . && \
		$(PY) -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
			sys.exit(0 if "dagster_airpeer/py.typed" in names else f"{sys.argv[1]}: no dagster_airpeer/py.typed")' \
			"$$out"/*.whl && echo "wheel ships dagster_airpeer/py.typed"

test-unit: install
	$(VENV_BIN)/pytest -m "not integration" -q

# The whole suite: unit tests, real Airflow 2.11 and 3.3, the real dagster-daemon, the tutorial end to end,
# the browser check and the benchmark harness at tiny size.
# Most real-Airflow tests wait on Airflow, not on the CPU, so they run on PYTEST_WORKERS pytest-xdist workers even
# on 2 cores. `--dist loadgroup` with the xdist_group marks of tests/conftest.py keeps each shared stack on one
# worker (af3, af2, the tutorial demo, the tiny benchmark): one Airflow 3.3 and one 2.11 for the session, as
# without xdist, while unit tests and tests with their own stack spread. The 15 slowest tests are listed each run.
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 3
test: lint typecheck check-wheel $(TEST_DEPS)
	$(VENV_BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)
