"""Definitions peering two Airflow instances, for the clean tests: `clean_peered` (the Airflow named by the
environment variables) and `clean_down`, whose URL (AIRPEER_TEST_AIRFLOW_DOWN_URL) answers nothing, loaded from
the snapshot that the test stored for it."""

import os

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

defs_up = build_defs_from_airflow_instance(
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
defs_down = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ["AIRPEER_TEST_AIRFLOW_DOWN_URL"],
            username=os.environ["AIRPEER_TEST_AIRFLOW_USER"],
            password=os.environ["AIRPEER_TEST_AIRFLOW_PASSWORD"],
        ),
        name="clean_down",
        max_retries=0,
        timeout=2.0,
    ),
    dag_selector_fn=lambda dag: dag.dag_id in {"airpeer_ok", "airpeer_two_tasks"},
)
