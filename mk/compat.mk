# The lowest versions allowed: `make test` also runs the unit suite (no real Airflow) in a venv where every direct
# dependency of pyproject.toml (dagster, httpx, pydantic, tenacity and every extra's) is at its lower bound
# (uv's `--resolution lowest-direct`), so neither an API of a newer release nor a too-low bound slips in
# unnoticed. Dagster resolves to 1.12.6, the lowest supported (1.12.0-1.12.5 cannot derive the YAML model of a
# Component field with a default factory, which AirflowInstanceComponent has).
# `--upgrade`: uv keeps installed versions that satisfy a requirement; when the stamp is redone over an old venv
# they must move to the minimums too.
DAGSTER_MIN_VENV := $(ROOT)/.venvs/dagster-min
DAGSTER_MIN_STAMP := $(DAGSTER_MIN_VENV)/.airpeer-installed
# Every extra of pyproject.toml, so that their lower bounds are tried too (tests/test_packaging.py checks).
DAGSTER_MIN_EXTRAS := test,mwaa,composer
DAGSTER_MIN_TESTS := tests/feed tests/test_events.py tests/test_translator.py tests/test_definitions.py \
	tests/airflow tests/test_packaging.py tests/test_sensor_events.py tests/test_sensor_settings.py \
	tests/test_dagster_compat.py tests/test_snapshot.py tests/test_clean.py tests/test_doctor.py tests/test_list.py \
	tests/observe tests/components/test_component_yaml.py tests/components/test_component_state.py

.PHONY: test-dagster-min
TEST_DEPS += test-dagster-min

$(DAGSTER_MIN_VENV)/bin/python: | $(UV)
	@echo "creating $(DAGSTER_MIN_VENV) ..."
	@mkdir -p "$(dir $(DAGSTER_MIN_VENV))"
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(DAGSTER_MIN_VENV)"

$(DAGSTER_MIN_STAMP): $(ROOT)/pyproject.toml $(ROOT)/mk/compat.mk | $(DAGSTER_MIN_VENV)/bin/python
	@echo "installing airpeer with the lowest allowed version of every direct dependency into $(DAGSTER_MIN_VENV) ..."
	@cd "$(ROOT)" && $(UV_INSTALL) --python "$(DAGSTER_MIN_VENV)/bin/python" --resolution lowest-direct --upgrade \
		-e ".[$(DAGSTER_MIN_EXTRAS)]"
	@touch "$@"

# These unit tests are CPU-bound: one pytest-xdist worker per core (the lowest pytest-xdist allowed).
test-dagster-min: $(DAGSTER_MIN_STAMP)
	@echo "unit tests at the lowest allowed versions: $$(cd "$(ROOT)" && $(DAGSTER_MIN_VENV)/bin/python -c \
		'from importlib.metadata import version as v; print(", ".join(f"{p} {v(p)}" for p in ("dagster", "httpx", "pydantic", "tenacity")))') ..."
	@cd "$(ROOT)" && AIRPEER_LOWEST_DIRECT=1 $(DAGSTER_MIN_VENV)/bin/pytest -q -p no:cacheprovider -m "not integration" \
		-n 2 --durations=5 $(DAGSTER_MIN_TESTS)
