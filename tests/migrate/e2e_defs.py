"""The Dagster code location of tests/migrate/test_proxy_e2e.py, loaded by a real `dagster dev`.

The tasks of the migrate test DAGs (tests/migrate/dags) are mapped to real `@asset`s, so
`build_defs_from_airflow_instance` defines a proxy job for each; the Airflow comes from the environment.
"""

import os
import time
from pathlib import Path

import dagster as dg

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)


@dg.asset
def mig_extracted() -> None:
    """Built by task extract of airpeer_mig_steps."""


@dg.asset(deps=[mig_extracted])
def mig_loaded() -> None:
    """Built by task load of airpeer_mig_steps."""


@dg.asset
def mig_waited() -> None:
    """Built by task wait of airpeer_mig_retry: holds the run until the test creates $AIRPEER_TEST_RELEASE."""
    release = Path(os.environ["AIRPEER_TEST_RELEASE"])
    deadline = time.monotonic() + 240
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} was not created")
        time.sleep(0.2)  # waiting for the test's signal


@dg.asset
def mig_held() -> None:
    """Built by task held of airpeer_mig_timeout: runs until terminated (Airflow's timeout cancels the run)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.2)
    raise TimeoutError("not terminated")


@dg.asset
def mig_broken() -> None:
    """Built by task broken of airpeer_mig_broken: always fails."""
    raise ValueError("row 7 has no customer id")


defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=dg.EnvVar("AIRPEER_TEST_AIRFLOW_URL"),
            username=dg.EnvVar("AIRPEER_TEST_AIRFLOW_USER"),
            password=dg.EnvVar("AIRPEER_TEST_AIRFLOW_PASSWORD"),
        ),
        name="mig",
    ),
    defs=dg.Definitions(
        assets=[
            *assets_with_task_mappings(
                dag_id="airpeer_mig_steps", task_mappings={"extract": [mig_extracted], "load": [mig_loaded]}
            ),
            *assets_with_task_mappings(dag_id="airpeer_mig_retry", task_mappings={"wait": [mig_waited]}),
            *assets_with_task_mappings(dag_id="airpeer_mig_timeout", task_mappings={"held": [mig_held]}),
            *assets_with_task_mappings(dag_id="airpeer_mig_broken", task_mappings={"broken": [mig_broken]}),
        ]
    ),
    dag_selector_fn=lambda dag: dag.dag_id.startswith("airpeer_mig_"),
    sensor_minimum_interval_seconds=2,
)
