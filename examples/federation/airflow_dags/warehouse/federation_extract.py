"""federation_extract (warehouse Airflow): loads the day's orders. Triggered by hand (or by its own schedule)."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]


def _extract() -> int:
    return 42  # stands for the rows loaded


with DAG(
    dag_id="federation_extract",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["federation"],
    default_args={"owner": "data-eng", "retries": 0},
):
    PythonOperator(task_id="extract_orders", python_callable=_extract)
