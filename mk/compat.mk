# The supported Dagster range starts at 1.12: `make test` also runs the unit suite (no real Airflow) against the
# lowest supported minor, in its own venv, so an API used from a newer Dagster cannot slip in unnoticed.
DAGSTER_MIN_SPEC := dagster==1.12.*
DAGSTER_MIN_VENV := $(ROOT)/.venvs/dagster-min
DAGSTER_MIN_STAMP := $(DAGSTER_MIN_VENV)/.airpeer-installed

.PHONY: test-dagster-min
TEST_DEPS += test-dagster-min

$(DAGSTER_MIN_VENV)/bin/python: | $(UV)
	@echo "creating $(DAGSTER_MIN_VENV) ..."
	@mkdir -p "$(dir $(DAGSTER_MIN_VENV))"
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(DAGSTER_MIN_VENV)"

$(DAGSTER_MIN_STAMP): $(ROOT)/pyproject.toml $(ROOT)/mk/compat.mk | $(DAGSTER_MIN_VENV)/bin/python
	@echo "installing airpeer with the lowest supported Dagster ($(DAGSTER_MIN_SPEC)) ..."
	@cd "$(ROOT)" && $(UV_INSTALL) --python "$(DAGSTER_MIN_VENV)/bin/python" -e ".[test]" "$(DAGSTER_MIN_SPEC)"
	@touch "$@"

test-dagster-min: $(DAGSTER_MIN_STAMP)
	@echo "unit tests with $$($(DAGSTER_MIN_VENV)/bin/python -c 'import dagster; print("dagster", dagster.__version__)') ..."
	@cd "$(ROOT)" && $(DAGSTER_MIN_VENV)/bin/pytest -q -p no:cacheprovider -m "not integration" \
		tests/feed tests/test_events.py tests/test_translator.py tests/test_definitions.py tests/airflow
