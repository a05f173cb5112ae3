"""``airpeer_proxied``: a DAG file that ends with ``proxying_to_dagster``, for the proxy's parse-time tests.

Tasks: ``load`` (retries, pool, callbacks), ``transform.clean`` in a task group, ``export`` (an EmptyOperator),
``fan`` (a mapped ``.expand`` task, never proxied) and ``report`` (not proxied). Works on Airflow 2.11 and 3.3.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dagster_airpeer.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster

try:  # Airflow 3
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, TaskGroup
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.empty import EmptyOperator  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]
    from airflow.utils.task_group import TaskGroup  # type: ignore[no-redef,assignment]


def _work(**_: object) -> int:
    return 1


def _on_failure(context: object) -> None:
    pass


with DAG(
    dag_id="airpeer_proxied",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["airpeer", "test"],
) as dag:
    load = PythonOperator(
        task_id="load",
        python_callable=_work,
        retries=3,
        retry_delay=timedelta(seconds=7),
        pool="default_pool",
        on_failure_callback=_on_failure,
    )
    with TaskGroup("transform"):
        clean = PythonOperator(task_id="clean", python_callable=_work)
    export = EmptyOperator(task_id="export", trigger_rule="all_done")
    fan = PythonOperator.partial(task_id="fan", python_callable=_work).expand(op_args=[[1], [2]])
    report = PythonOperator(task_id="report", python_callable=_work)
    load >> clean >> export >> [fan, report]

proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(
        os.environ.get("AIRPEER_TEST_PROXIED_STATE", Path(__file__).parent / "proxied_state")
    ),
)
