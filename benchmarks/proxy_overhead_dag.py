"""The DAG of benchmarks/proxy_overhead.py: one task, native or proxied by its YAML in $AIRPEER_BENCH_PROXIED_STATE."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from dagster_airpeer.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]


def _work() -> int:
    # The same small work as the mapped asset in proxy_overhead_defs.py.
    return sum(i * i for i in range(200_000))


with DAG(
    dag_id="airpeer_bench_proxy",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["airpeer", "bench"],
    default_args={"retries": 0},
):
    PythonOperator(task_id="work", python_callable=_work)

proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(os.environ["AIRPEER_BENCH_PROXIED_STATE"]),
)
