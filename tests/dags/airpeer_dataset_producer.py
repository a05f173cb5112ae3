"""``airpeer_dataset_producer`` updates one dataset (Airflow 2) / asset (Airflow 3) through a task outlet;
``airpeer_dataset_consumer`` is scheduled on it. Used by tests/observe/test_airflow_assets_integration.py."""

from __future__ import annotations

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator

#: Characters a key must keep apart: '/', '.', ':', '-', '_'.
URI = "file:///tmp/airpeer-test/data_set.v1/out.csv"

try:  # Airflow 3: an asset with its own name
    from airflow.sdk import Asset

    OUTLET = Asset(name="airpeer_test_dataset", uri=URI)
except ImportError:  # Airflow 2.11: a dataset is its URI
    from airflow.datasets import Dataset

    OUTLET = Dataset(URI)  # type: ignore[assignment]


def _produce() -> int:
    return 1


def _consume() -> int:
    return 2


with DAG(
    dag_id="airpeer_dataset_producer",
    description="airpeer test DAG: one task with a dataset outlet",
    **DAG_KWARGS,
):
    PythonOperator(task_id="produce", python_callable=_produce, outlets=[OUTLET])

with DAG(
    dag_id="airpeer_dataset_consumer",
    description="airpeer test DAG: scheduled on the producer's dataset",
    **{**DAG_KWARGS, "schedule": [OUTLET]},
):
    PythonOperator(task_id="consume", python_callable=_consume)
