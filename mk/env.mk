# Environments: uv, .venv (Airflow 3.3 + Dagster + dbt + airpeer), .venvs/airflow2 (Airflow 2.11).
# Every target of the project depends on `install`, so a fresh clone needs nothing but python3 and make.
# Stamp files make a second `make install` a no-op; a stamp is redone when pyproject.toml (.venv only) or this
# file changes (uv then only installs what is missing, in seconds).

VENV := $(ROOT)/.venv
VENV_BIN := $(VENV)/bin
PY := $(VENV_BIN)/python
AIRFLOW2_VENV := $(ROOT)/.venvs/airflow2

# The interpreter the venvs are made from. uv must not try to download one (only PyPI is reachable).
ifeq ($(origin BASE_PYTHON),undefined)
BASE_PYTHON := $(or $(shell command -v python3.11 2>/dev/null),$(shell command -v python3 2>/dev/null))
endif
# A uv already on PATH is used as is; otherwise it is pip-installed into $(ROOT)/.bin (never the system site).
UV_HOME := $(ROOT)/.bin/uv
ifeq ($(origin UV),undefined)
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_HOME)/bin/uv)
endif

AIRFLOW3_SPEC := apache-airflow==3.3.2
AIRFLOW2_SPEC := apache-airflow==2.11.2
# dbt-core 1.12 pulls a package whose build downloads from outside PyPI: keep it below 1.12.
# dagster-dg-cli: the real `dg` CLI of tests/components/test_component_dg_cli.py (it pins the Dagster release).
# dagster-dbt pins one Dagster release; without a floor, a resolver that keeps the newest Dagster falls back to an
# ancient dagster-dbt (0.10, importing dagster.core) instead of moving Dagster to the release dagster-dbt allows.
VENV_EXTRA_SPECS := "$(AIRFLOW3_SPEC)" dagster-webserver dagster-dg-cli "dagster-dbt>=0.29" "dbt-duckdb>=1.9" "dbt-core<1.12" duckdb selenium pyinstrument

VENV_STAMP := $(VENV)/.airpeer-installed
AIRFLOW2_STAMP := $(AIRFLOW2_VENV)/.airpeer-installed

# Bytecode is compiled at install time: PYTHONDONTWRITEBYTECODE=1 is set on these machines and without .pyc files
# every Airflow/Dagster start is about twice as slow.
UV_INSTALL := UV_PYTHON_DOWNLOADS=never $(UV) pip install --quiet --compile-bytecode

.PHONY: install

install: $(VENV_STAMP) $(AIRFLOW2_STAMP)

$(UV_HOME)/bin/uv:
	@echo "bootstrapping uv into $(UV_HOME) ..."
	@$(BASE_PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$(UV_HOME)" uv

# `uv venv` replaces an existing venv, so it only runs when the interpreter is missing.
$(PY): | $(UV)
	@echo "creating $(VENV) ..."
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(VENV)"

$(VENV_STAMP): $(ROOT)/pyproject.toml $(ROOT)/mk/env.mk | $(PY)
	@echo "installing airpeer, Airflow 3.3, Dagster and dbt into .venv ..."
	@cd "$(ROOT)" && $(UV_INSTALL) --python "$(PY)" -e ".[test,mwaa,composer]" $(VENV_EXTRA_SPECS)
	@touch "$@"

$(AIRFLOW2_VENV)/bin/python: | $(UV)
	@echo "creating $(AIRFLOW2_VENV) ..."
	@mkdir -p "$(dir $(AIRFLOW2_VENV))"
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(AIRFLOW2_VENV)"

$(AIRFLOW2_STAMP): $(ROOT)/mk/env.mk | $(AIRFLOW2_VENV)/bin/python
	@echo "installing Airflow 2.11 venv ..."
	@$(UV_INSTALL) --python "$(AIRFLOW2_VENV)/bin/python" "$(AIRFLOW2_SPEC)"
	@touch "$@"
