"""DAGs of the soak run (`make soak`): quick ones, a flaky one, a failing one, a chain and a scheduled one.

Written for Airflow 3.3 (the soak runs Airflow 3). Kept small: on two cores the soak wants hundreds of runs
in minutes, so most tasks are EmptyOperators (the scheduler completes them without starting a process) and
a few are Python tasks (which go through the executor and the api-server's task execution API).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

COMMON = {
    "start_date": datetime(2024, 1, 1, tzinfo=timezone.utc),
    "catchup": False,
    "is_paused_upon_creation": False,
    "tags": ["airpeer", "soak"],
    "default_args": {"owner": "soak", "retries": 0},
    "max_active_runs": 8,
}


def _ok() -> str:
    return "ok"


def _flaky() -> None:
    if random.random() < 0.35:
        raise RuntimeError("soak_flaky fails now and then, on purpose")


def _fail() -> None:
    raise RuntimeError("soak_fail fails on purpose")


with DAG(dag_id="soak_empty", schedule=None, **COMMON):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")

with DAG(dag_id="soak_python", schedule=None, **COMMON):
    PythonOperator(task_id="ok", python_callable=_ok)

with DAG(dag_id="soak_flaky", schedule=None, **COMMON):
    EmptyOperator(task_id="start") >> PythonOperator(task_id="maybe", python_callable=_flaky)

with DAG(dag_id="soak_fail", schedule=None, **COMMON):
    PythonOperator(task_id="fail", python_callable=_fail)

with DAG(dag_id="soak_chain", schedule=None, **COMMON):
    EmptyOperator(task_id="one") >> EmptyOperator(task_id="two") >> EmptyOperator(task_id="three")

with DAG(dag_id="soak_scheduled", schedule=timedelta(seconds=20), **COMMON):
    EmptyOperator(task_id="tick")
