"""Definitions peering the Airflow named by environment variables; loaded by the real dagster-daemon in tests."""

import os

import dagster as dg

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)


@dg.asset_check(asset=dg.AssetKey(["daemon_peered", "dag", "airpeer_ok"]))
def ok_dag_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"checked_by": "daemon test"})


@dg.asset_check(asset=dg.AssetKey(["daemon_peered", "dag", "airpeer_ok"]))
def merged_later_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"checked_by": "a Definitions merged later"})


@dg.asset_check(asset=dg.AssetKey("daemon_first_out"))
def first_out_check() -> dg.AssetCheckResult:
    """A user check on a task-mapped asset (observe): run by the sensor's checks job after each materialization."""
    return dg.AssetCheckResult(passed=True, metadata={"checked_by": "daemon test"})


# Observe: the tasks of airpeer_observe_steps, each building one asset.
mapped = assets_with_task_mappings(
    dag_id="airpeer_observe_steps",
    task_mappings={
        "first": [dg.AssetSpec("daemon_first_out")],
        "gate": [dg.AssetSpec("daemon_gate_out", deps=["daemon_first_out"])],
        "retried": [dg.AssetSpec("daemon_retried_out", deps=["daemon_gate_out"])],
    },
)

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url=dg.EnvVar("AIRPEER_TEST_AIRFLOW_URL"),
            username=dg.EnvVar("AIRPEER_TEST_AIRFLOW_USER"),
            password=dg.EnvVar("AIRPEER_TEST_AIRFLOW_PASSWORD"),
        ),
        name="daemon_peered",
    ),
    defs=dg.Definitions(assets=mapped, asset_checks=[ok_dag_check, first_out_check]),
    sensor_minimum_interval_seconds=int(os.environ.get("AIRPEER_TEST_SENSOR_INTERVAL", "30")),
)
# A check from another Definitions merged with the result: the sensor must request it too (#13.5). (One
# Definitions at module scope: Dagster refuses to load a file with two.)
defs = dg.Definitions.merge(defs, dg.Definitions(asset_checks=[merged_later_check]))
