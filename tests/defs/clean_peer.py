"""Definitions used by the clean-command tests: peers the Airflow named by environment variables.

Also loaded by the real dagster-daemon in the sensor-cursor test (interval from AIRPEER_TEST_SENSOR_INTERVAL).
"""

import os

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ["AIRPEER_TEST_AIRFLOW_URL"],
            username=os.environ["AIRPEER_TEST_AIRFLOW_USER"],
            password=os.environ["AIRPEER_TEST_AIRFLOW_PASSWORD"],
        ),
        name="clean_peered",
    ),
    dag_selector_fn=lambda dag: (
        dag.dag_id in {"airpeer_ok", "airpeer_fail", "airpeer_flaky", "airpeer_clean_wait"}
    ),
    sensor_minimum_interval_seconds=int(os.environ.get("AIRPEER_TEST_SENSOR_INTERVAL", "30")),
)
