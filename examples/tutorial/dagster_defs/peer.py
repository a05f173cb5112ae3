"""Stage 1, peer: every Airflow DAG becomes a Dagster asset, every finished Airflow run an event on it."""

import os

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=os.environ.get("AIRFLOW_URL", "http://127.0.0.1:8080"),
            username=os.environ.get("AIRFLOW_USERNAME", "admin"),
            password=os.environ.get("AIRFLOW_PASSWORD", "admin"),
        ),
        name="airflow_instance_one",
    ),
)
