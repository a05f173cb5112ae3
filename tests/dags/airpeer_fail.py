"""``airpeer_fail``: one task that raises, no retries, so every run fails."""

from __future__ import annotations

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _fail() -> None:
    raise RuntimeError("airpeer_fail fails on purpose")


with DAG(dag_id="airpeer_fail", description="airpeer test DAG: one task that fails", **DAG_KWARGS):
    PythonOperator(task_id="fail", python_callable=_fail, retries=0)
