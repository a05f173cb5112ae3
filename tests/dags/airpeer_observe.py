"""``airpeer_observe``: ``extract`` >> ``transform`` (dynamically mapped, 3 map indexes) >> ``load``.

For the observe stage: tasks to map assets to, and a ``.expand`` task. Triggered with ``conf={"fail_load":
true}``, ``load`` fails after ``extract`` and every ``transform`` map index succeeded.
"""

from __future__ import annotations

from typing import Any

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _extract() -> list[int]:
    return [1, 2, 3]


def _transform(value: int) -> int:
    return value * 2


def _load(**context: Any) -> None:
    if (context["dag_run"].conf or {}).get("fail_load"):
        raise RuntimeError("airpeer_observe was asked to fail its load task")


with DAG(dag_id="airpeer_observe", description="airpeer test DAG: three tasks, one mapped", **DAG_KWARGS):
    extract = PythonOperator(task_id="extract", python_callable=_extract)
    transform = PythonOperator.partial(task_id="transform", python_callable=_transform).expand(
        op_args=[[1], [2], [3]]
    )
    load = PythonOperator(task_id="load", python_callable=_load)
    extract >> transform >> load
