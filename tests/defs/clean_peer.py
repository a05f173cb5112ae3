"""Definitions used by the clean-command test: peers the Airflow named by environment variables."""

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
    dag_selector_fn=lambda dag: dag.dag_id in {"airpeer_ok", "airpeer_fail"},
)
