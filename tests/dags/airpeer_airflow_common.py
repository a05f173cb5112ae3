"""What every airpeer test DAG shares. Airflow puts the DAGs folder on ``sys.path``, so DAG files import it.

Triggered by tests only, never paused, no catchup, owned by "data-eng" and tagged for filtering; the imports
work on Airflow 3 (task SDK + standard provider) and Airflow 2.11 alike.
"""

from __future__ import annotations

from datetime import datetime, timezone

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

__all__ = ["DAG", "DAG_KWARGS", "PythonOperator"]
