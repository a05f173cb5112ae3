"""Definitions used by the `airpeer doctor` / `airpeer list` tests: peers the Airflow named by environment variables.

Loaded as a file (`--defs`) and as a module (`-m doctor_peer` from tests/defs).
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
        name="doctor_peered",
    ),
    dag_selector_fn=lambda dag: dag.dag_id in {"airpeer_ok", "airpeer_fail"},
)
