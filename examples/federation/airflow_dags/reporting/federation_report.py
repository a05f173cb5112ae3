"""federation_report (reporting Airflow): builds the orders report. No schedule: Dagster triggers it when the
warehouse's federation_extract has run (examples/federation/defs.py)."""

from __future__ import annotations

from datetime import datetime, timezone

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]


def _report(**context: object) -> str:
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    # The run's conf names the upstream run it follows (set by the Dagster sensor that triggered it).
    return f"report after {conf.get('upstream_run_id', 'a manual run')}"


with DAG(
    dag_id="federation_report",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["federation"],
    default_args={"owner": "analytics", "retries": 0},
):
    PythonOperator(task_id="build_report", python_callable=_report)
