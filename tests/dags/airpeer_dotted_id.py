"""``airpeer.dotted-id``: a DAG id with a dot and a dash (asset keys and URLs must cope); succeeds."""

from __future__ import annotations

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _succeed() -> str:
    return "ok"


with DAG(dag_id="airpeer.dotted-id", description="airpeer test DAG: dotted and dashed id", **DAG_KWARGS):
    PythonOperator(task_id="succeed", python_callable=_succeed)
