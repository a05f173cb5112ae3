# The peering tutorial (examples/tutorial): demo, run-dag, clean, screenshots; and `browser` for the UI test.
#
#   make demo      Airflow 3.3 on :8080 (admin/admin) + `dagster dev` on :3000, in the foreground; Ctrl-C stops both
#   make run-dag   (another shell) triggers rebuild_customers_list through airpeer's client and follows it
#   make clean     deletes the DAG's finished Airflow runs and the asset's Dagster history; both keep running
#
# Ports and credentials: make demo AIRFLOW_PORT=8081 DAGSTER_PORT=3001 (or the same names as environment
# variables); give run-dag and clean the same values. Stage 1 of the tutorial alone: TUTORIAL_STAGE=peer; stage 3
# (each task's assets recorded as the task succeeds): TUTORIAL_STAGE=observe or observe_check_on_asset; stage 4
# (tasks proxied to Dagster one at a time, per airflow_dags/proxied_state/): TUTORIAL_STAGE=migrate.

TUTORIAL_DIR := $(ROOT)/examples/tutorial
# Which stage of the tutorial Dagster loads (examples/tutorial/dagster_defs/): peer_with_check (default), peer,
# observe, observe_check_on_asset or migrate (these three read the dbt manifest, which demo builds first).
TUTORIAL_STAGE ?= peer_with_check
TUTORIAL_DEFS = $(TUTORIAL_DIR)/dagster_defs/$(TUTORIAL_STAGE).py
TUTORIAL_DAG := rebuild_customers_list
SCREENSHOT_DIR := $(ROOT)/docs/images

AIRFLOW_PORT ?= 8080
DAGSTER_PORT ?= 3000
AIRFLOW_USERNAME ?= admin
AIRFLOW_PASSWORD ?= admin

# What the demo's processes are started with, so run-dag and clean reach the same Airflow and Dagster instance.
TUTORIAL_ENV = \
	AIRFLOW_PORT="$(AIRFLOW_PORT)" DAGSTER_PORT="$(DAGSTER_PORT)" \
	AIRFLOW_URL="http://127.0.0.1:$(AIRFLOW_PORT)" DAGSTER_URL="http://127.0.0.1:$(DAGSTER_PORT)" \
	AIRFLOW_USERNAME="$(AIRFLOW_USERNAME)" AIRFLOW_PASSWORD="$(AIRFLOW_PASSWORD)" \
	DAGSTER_HOME="$(TUTORIAL_DIR)/.dagster_home" TUTORIAL_EXAMPLE_DIR="$(TUTORIAL_DIR)"

# Debian's Chromium and its WebDriver, for tests/examples/test_tutorial_browser.py.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# The dbt manifest of the tutorial's dbt project, read by the observe stage's @dbt_assets (not committed:
# built from the project, like any dbt target/). `dbt parse` needs no database.
TUTORIAL_DBT_DIR := $(TUTORIAL_DIR)/dbt_project
TUTORIAL_DBT_MANIFEST := $(TUTORIAL_DBT_DIR)/target/manifest.json

TEST_DEPS += browser dbt-manifest

.PHONY: demo run-dag clean screenshots browser dbt-manifest

dbt-manifest: $(TUTORIAL_DBT_MANIFEST)

# Rebuilt when a file of the dbt project changes (models, tests, sources, dbt_project.yml, profiles.yml).
# (install is order-only: a reinstall alone does not change the manifest.)
$(TUTORIAL_DBT_MANIFEST): $(shell find $(TUTORIAL_DBT_DIR) -path $(TUTORIAL_DBT_DIR)/target -prune -o -path $(TUTORIAL_DBT_DIR)/logs -prune -o -type f \( -name '*.sql' -o -name '*.yml' \) -print) | install
	@echo "building the dbt manifest of $(TUTORIAL_DBT_DIR) (dbt parse) ..."
	@cd "$(TUTORIAL_DBT_DIR)" && $(VENV_BIN)/dbt parse --quiet --project-dir . --profiles-dir . --target-path target --log-path logs
	@touch "$@"

demo: install dbt-manifest
	@$(TUTORIAL_ENV) $(PY) $(TUTORIAL_DIR)/scripts/demo.py --defs $(TUTORIAL_DEFS)

run-dag: install
	@$(TUTORIAL_ENV) $(PY) $(TUTORIAL_DIR)/scripts/run_dag.py

# Only the tutorial's DAG, and its finished runs (a run still going is kept: `airpeer clean --help`).
clean: install
	@$(TUTORIAL_ENV) $(PY) -m dagster_airpeer clean --defs $(TUTORIAL_DEFS) --dag $(TUTORIAL_DAG) --yes

# Runs the browser test on a private stack (on the demo's ports, so the images show the README's URLs; stop
# `make demo` first) and keeps its screenshots in docs/images/.
screenshots: install browser dbt-manifest
	TUTORIAL_SCREENSHOT_DIR="$(SCREENSHOT_DIR)" \
	TUTORIAL_TEST_AIRFLOW_PORT="$(AIRFLOW_PORT)" TUTORIAL_TEST_DAGSTER_PORT="$(DAGSTER_PORT)" \
		$(VENV_BIN)/pytest -q -p no:cacheprovider tests/examples/test_tutorial_browser.py \
		tests/examples/test_tutorial_observe.py::test_asset_graph_shows_the_lineage

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing chromium and chromium-driver (apt) ..."; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver; \
	fi
