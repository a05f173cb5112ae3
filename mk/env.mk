# Environments: uv, .venv (Airflow 3.3 + Dagster + dbt + airpeer), .venvs/airflow2 (Airflow 2.11),
# .venvs/airflow3-nodagster (Airflow 3.3 with airpeer installed as in Airflow's own environment: no Dagster).
# Every target of the project depends on `install`, so a fresh clone needs nothing but python3 and make.
# Stamp files make a second `make install` a no-op; a stamp is redone when pyproject.toml (.venv only) or this
# file changes (uv then only installs what is missing, in seconds).

VENV := $(ROOT)/.venv
VENV_BIN := $(VENV)/bin
PY := $(VENV_BIN)/python
AIRFLOW2_VENV := $(ROOT)/.venvs/airflow2
AIRFLOW3_NODAGSTER_VENV := $(ROOT)/.venvs/airflow3-nodagster

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
AIRFLOW3_NODAGSTER_STAMP := $(AIRFLOW3_NODAGSTER_VENV)/.airpeer-installed

# Bytecode is compiled at install time: PYTHONDONTWRITEBYTECODE=1 is set on these machines and without .pyc files
# every Airflow/Dagster start is about twice as slow.
UV_INSTALL := UV_PYTHON_DOWNLOADS=never $(UV) pip install --quiet --compile-bytecode

.PHONY: install

install: $(VENV_STAMP) $(AIRFLOW2_STAMP) $(AIRFLOW3_NODAGSTER_STAMP)

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
	@# airpeer's Airflow side, installed the documented way (no Dagster), for DAG files that proxy to Dagster
	@# (the tutorial's). Editable, so that it follows the source as .venv does.
	@cd "$(ROOT)" && $(UV_INSTALL) --python "$(AIRFLOW2_VENV)/bin/python" --no-deps -e .
	@touch "$@"

# Airflow 3.3 as a proxy's Airflow runs it: airpeer installed the documented Airflow-side way (README, "Migrate":
# `--no-deps`, so no Dagster; editable here, to follow the source) next to Airflow, which already brings httpx, pydantic, tenacity and PyYAML.
# tests/in_airflow/test_in_airflow_runtime.py runs its Airflow 3.3 cases here (it skips them without this venv).
# Built from uv's cache: .venv's versions (Dagster's and airpeer's own lines left out) are the constraints, so it
# resolves to what .venv already downloaded; `--offline` first, the index only when the cache lacks something.
$(AIRFLOW3_NODAGSTER_VENV)/bin/python: | $(UV)
	@echo "creating $(AIRFLOW3_NODAGSTER_VENV) ..."
	@mkdir -p "$(dir $(AIRFLOW3_NODAGSTER_VENV))"
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(AIRFLOW3_NODAGSTER_VENV)"

$(AIRFLOW3_NODAGSTER_STAMP): $(VENV_STAMP) $(ROOT)/mk/env.mk | $(AIRFLOW3_NODAGSTER_VENV)/bin/python
	@echo "installing Airflow 3.3 and airpeer without Dagster into $(AIRFLOW3_NODAGSTER_VENV) ..."
	@constraints=$$(mktemp) && trap 'rm -f "$$constraints"' EXIT && \
		$(UV) pip freeze --python "$(PY)" | grep -v -i -e '^dagster' -e '^-e' -e '@ file' > "$$constraints" && \
		specs=("$(AIRFLOW3_SPEC)" apache-airflow-providers-standard httpx pydantic tenacity pyyaml) && \
		py="$(AIRFLOW3_NODAGSTER_VENV)/bin/python" && \
		{ $(UV_INSTALL) --offline --python "$$py" -c "$$constraints" "$${specs[@]}" 2>/dev/null || \
			{ echo "  (not all of it in uv's cache: asking the index)" && \
				$(UV_INSTALL) --python "$$py" -c "$$constraints" "$${specs[@]}"; }; }
	@cd "$(ROOT)" && $(UV_INSTALL) --python "$(AIRFLOW3_NODAGSTER_VENV)/bin/python" --no-deps -e .
	@"$(AIRFLOW3_NODAGSTER_VENV)/bin/python" -c 'import importlib.util, sys; import dagster_airpeer.in_airflow; \
		sys.exit("dagster is installed in $(AIRFLOW3_NODAGSTER_VENV)" if importlib.util.find_spec("dagster") else 0)'
	@touch "$@"
