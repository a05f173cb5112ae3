# Benchmarks (benchmarks/): airpeer vs dagster-airlift against a real Airflow 2.11 and 3.3.
#
#   make bench        every case at full size (about 50 minutes, estimated: the 35 of loads and sensors, end-to-end runs
#                     that store every event in a SQLite DagsterInstance, and two live cases of 50,000 runs in
#                     5 minutes; dagster-airlift is capped per case; the observe cases with task mappings add about
#                     15, estimated), writes BENCHMARKS.md at the repository root; raw figures and logs in .work/bench
#   make bench-tiny   the same harness at tiny size (N=5, K=30, a live case of 300 runs in 12 s; 4-6 minutes),
#                     report in .work/bench-tiny
#   make bench-component  the Component's loads (issue 12): run-worker load from state vs code-server reload at
#                     1000 DAGs on Airflow 3.3 (one Airflow start with 1000 DAG files), its section of BENCHMARKS.md
#   make bench-proxy  what proxying a task to Dagster adds to its duration (issue 11), real Airflow 3.3 and 2.11
#                     with a real `dagster dev`, 5 timed runs each way, its section of BENCHMARKS.md
#
# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--only 2:1000 --airlift-cap 900".
#   --only 3:1000          plans (Airflow major:DAGs); --cases sensors,live  parts of each plan (loads, sensors, live,
#                          mapped_loads, mapped_sensors: the observe cases, every task mapped to an asset)
#   --airpeer-commit SHA   measure airpeer as of that commit (its src/ via git archive), not the working tree
# A run of some plans or parts only keeps, in BENCHMARKS.md, what it did not re-run, marked with its run.
# dagster-airlift pins its own dagster, so it gets its own venv (.venvs/airlift); uv resolves it.

AIRLIFT_VENV := $(ROOT)/.venvs/airlift
AIRLIFT_SPEC := dagster-airlift[core]==0.29.27
AIRLIFT_STAMP := $(AIRLIFT_VENV)/.airpeer-installed
BENCH_ARGS ?=

.PHONY: bench bench-tiny bench-env bench-component bench-proxy
BENCH_COMPONENT_ARGS ?=
BENCH_PROXY_ARGS ?= --major 3 --major 2 --runs 5

bench-env: install $(AIRLIFT_STAMP)

$(AIRLIFT_VENV)/bin/python: | $(UV)
	@echo "creating $(AIRLIFT_VENV) ..."
	@mkdir -p "$(dir $(AIRLIFT_VENV))"
	@UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python "$(BASE_PYTHON)" "$(AIRLIFT_VENV)"

$(AIRLIFT_STAMP): | $(AIRLIFT_VENV)/bin/python
	@echo "installing $(AIRLIFT_SPEC) into .venvs/airlift ..."
	@$(UV_INSTALL) --python "$(AIRLIFT_VENV)/bin/python" "$(AIRLIFT_SPEC)"
	@touch "$@"

bench: bench-env
	cd "$(ROOT)" && "$(PY)" -m benchmarks --command "make bench" $(BENCH_ARGS)

bench-tiny: bench-env
	cd "$(ROOT)" && "$(PY)" -m benchmarks --tiny --command "make bench-tiny" \
		--work-dir "$(ROOT)/.work/bench-tiny" --output "$(ROOT)/.work/bench-tiny/BENCHMARKS.md" $(BENCH_ARGS)

bench-component: bench-env
	cd "$(ROOT)" && "$(PY)" -m benchmarks.component_loads $(BENCH_COMPONENT_ARGS)

bench-proxy: bench-env
	cd "$(ROOT)" && "$(PY)" -m benchmarks.proxy_overhead $(BENCH_PROXY_ARGS)

# `make test` runs the harness once at tiny size (tests/benchmarks/test_bench_tiny.py): it needs the venv.
TEST_DEPS += bench-env
test: bench-env
