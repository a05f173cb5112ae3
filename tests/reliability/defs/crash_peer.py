"""Definitions for the daemon crash test: the Airflow named by environment variables, a short lookback."""

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
    ),
    sensor_minimum_interval_seconds=2,
    lookback=timedelta(minutes=int(os.environ.get("AIRPEER_TEST_LOOKBACK_MINUTES", "10"))),
)
