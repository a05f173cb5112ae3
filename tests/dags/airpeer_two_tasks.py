"""``airpeer_two_tasks``: two tasks in sequence, both succeed."""

from __future__ import annotations

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _extract() -> int:
    return 21


def _load() -> int:
    return 42


with DAG(dag_id="airpeer_two_tasks", description="airpeer test DAG: two tasks in sequence", **DAG_KWARGS):
    extract = PythonOperator(task_id="extract", python_callable=_extract)
    load = PythonOperator(task_id="load", python_callable=_load)
    extract >> load
