# Soak: a real Airflow 3 kept busy for SOAK_MINUTES while the airpeer sensor ticks and the api-server is
# stopped at random moments; then every completion is compared with every Dagster event. Bounded and
# self-stopping (everything it starts is stopped on exit); not part of `make test`.
#   make soak                      # ~10 min of load (+ ~1-2 min start, drain and report)
#   make soak SOAK_MINUTES=3       # shorter
#   make soak SOAK_ARGS="--seed 7 --no-write"
# Writes its figures into docs/reliability.md and BENCHMARKS.md between <!-- soak:start --> and <!-- soak:end -->.

SOAK_MINUTES ?= 10
SOAK_ARGS ?=

.PHONY: soak

soak: install
	cd "$(ROOT)" && $(PY) -m reliability.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
