"""``airpeer_flaky``: succeeds, or fails when triggered with ``conf={"fail": true}`` (recovery tests)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]

DAG_KWARGS = {
    "schedule": None,
    "start_date": datetime(2024, 1, 1, tzinfo=timezone.utc),
    "catchup": False,
    "is_paused_upon_creation": False,
    "tags": ["airpeer", "test"],
    "default_args": {"owner": "data-eng", "retries": 0},
}


def _maybe_fail(**context: Any) -> None:
    if (context["dag_run"].conf or {}).get("fail"):
        raise RuntimeError("airpeer_flaky was asked to fail")


with DAG(dag_id="airpeer_flaky", description="airpeer test DAG: fails on request", **DAG_KWARGS):
    PythonOperator(task_id="maybe_fail", python_callable=_maybe_fail, retries=0)
