"""``airpeer.dotted-id``: a DAG id with a dot and a dash (asset keys and URLs must cope); succeeds."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]

# Shared by every test DAG (kept inline so each file stands alone): triggered by tests only, never paused,
# no catchup, owned by "data-eng" and tagged for filtering.
DAG_KWARGS = {
    "schedule": None,
    "start_date": datetime(2024, 1, 1, tzinfo=timezone.utc),
    "catchup": False,
    "is_paused_upon_creation": False,
    "tags": ["airpeer", "test"],
    "default_args": {"owner": "data-eng", "retries": 0},
}


def _succeed() -> str:
    return "ok"


with DAG(dag_id="airpeer.dotted-id", description="airpeer test DAG: dotted and dashed id", **DAG_KWARGS):
    PythonOperator(task_id="succeed", python_callable=_succeed)
