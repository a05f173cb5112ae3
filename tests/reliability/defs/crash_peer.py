"""Definitions for the real-daemon tests: the Airflow named by environment variables, a short lookback.

The slow-Airflow test also sets the page size, the requests in flight and the tick budget through
AIRPEER_TEST_* variables.
"""

import os
from datetime import timedelta

import dagster as dg

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=dg.EnvVar("AIRPEER_TEST_AIRFLOW_URL"),
            username=dg.EnvVar("AIRPEER_TEST_AIRFLOW_USER"),
            password=dg.EnvVar("AIRPEER_TEST_AIRFLOW_PASSWORD"),
        ),
        name="crash_peered",
        page_size=int(os.environ.get("AIRPEER_TEST_PAGE_SIZE", "100")),
    ),
    sensor_minimum_interval_seconds=2,
    lookback=timedelta(minutes=int(os.environ.get("AIRPEER_TEST_LOOKBACK_MINUTES", "10"))),
    tick_time_budget_seconds=float(os.environ.get("AIRPEER_TEST_TICK_BUDGET_SECONDS", "8")),
    max_parallel_requests=int(os.environ.get("AIRPEER_TEST_PARALLEL_REQUESTS", "4")),
)
