"""``airpeer_observe_steps``: ``first`` >> ``gate`` >> ``retried``, for the observe stage's task feed.

``gate`` waits (up to 150 s) until the file named by ``conf["gate"]`` exists, so a test can see ``first``
recorded while the run is still running. ``retried`` has one retry and fails its first try when
``conf["fail_first_try"]`` is set.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

# The module name keeps the word "airflow" in this file: Airflow's DAG discovery (safe mode) skips files without it.
from airpeer_airflow_common import DAG, DAG_KWARGS, PythonOperator


def _first() -> None:
    return None


def _gate(**context: Any) -> None:
    path = (context["dag_run"].conf or {}).get("gate")
    deadline = time.monotonic() + 150
    while path and not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate file {path} never appeared")
        time.sleep(0.2)


def _retried(**context: Any) -> None:
    if (context["dag_run"].conf or {}).get("fail_first_try") and context["ti"].try_number == 1:
        raise RuntimeError("airpeer_observe_steps fails the first try of `retried` on request")


with DAG(dag_id="airpeer_observe_steps", description="airpeer test DAG: observe steps", **DAG_KWARGS):
    first = PythonOperator(task_id="first", python_callable=_first)
    gate = PythonOperator(task_id="gate", python_callable=_gate)
    retried = PythonOperator(
        task_id="retried", python_callable=_retried, retries=1, retry_delay=timedelta(seconds=1)
    )
    first >> gate >> retried
