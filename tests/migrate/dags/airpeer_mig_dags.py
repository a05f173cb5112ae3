"""DAGs of the migrate end-to-end tests (tests/migrate/test_proxy_e2e.py), for Airflow 2.11 and 3.3.

``airpeer_mig_steps`` (``extract >> load``) is proxied task by task, then as a whole, by rewriting its YAML in
``$AIRPEER_TEST_PROXIED_STATE``; ``airpeer_mig_broken`` has one task whose Dagster asset raises; ``airpeer_mig_timeout`` one whose
asset never ends, so Airflow's ``execution_timeout`` stops it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from dagster_airpeer.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster

try:  # Airflow 3
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
    "tags": ["airpeer", "test", "migrate"],
    "default_args": {"retries": 0},
}


def _work() -> int:
    # In Airflow (not proxied): the peering sensor records the task's mapped asset.
    return 1


with DAG(dag_id="airpeer_mig_steps", **DAG_KWARGS):
    extract = PythonOperator(task_id="extract", python_callable=_work)
    load = PythonOperator(task_id="load", python_callable=_work)
    extract >> load

with DAG(dag_id="airpeer_mig_broken", **DAG_KWARGS):
    PythonOperator(task_id="broken", python_callable=_work)

with DAG(dag_id="airpeer_mig_timeout", **DAG_KWARGS):
    PythonOperator(task_id="held", python_callable=_work, execution_timeout=timedelta(seconds=20))

proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(os.environ["AIRPEER_TEST_PROXIED_STATE"]),
)
