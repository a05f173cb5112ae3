"""``airpeer_mig_retry``: a proxied task whose first try's process dies once its Dagster run exists.

The first try starts a thread that asks Dagster for the run tagged with this task run, and SIGKILLs its own
process as soon as it is there: a worker lost while waiting, so nothing terminates the Dagster run. The
second try (``retries=1``) must attach to that run rather than launch another.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from dagster_airpeer.in_airflow import DagsterProxyOperator, load_proxied_state_from_yaml, proxying_to_dagster

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef,assignment]

_RUNS = "query($t: [ExecutionTag!]) { runsOrError(filter: {tags: $t}) { ... on Runs { results { runId } } } }"


def _die_once_launched(url: str, tags: list[dict[str, str]]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{url}/graphql", json={"query": _RUNS, "variables": {"t": tags}}, timeout=5)
            if answer.json()["data"]["runsOrError"]["results"]:
                os.kill(os.getpid(), signal.SIGKILL)
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.2)  # polling Dagster for the launched run


class DiesOnFirstTry(DagsterProxyOperator):
    """The proxy, except that the first try's process is killed once its Dagster run is launched."""

    def execute(self, context: Any) -> None:
        if int(context["ti"].try_number) == 1:
            task = self._proxy_task(context)
            threading.Thread(
                target=_die_once_launched,
                args=(self.get_dagster_url(context), task.match_tags()),
                daemon=True,
            ).start()
        super().execute(context)


def _work() -> int:
    return 1


with DAG(
    dag_id="airpeer_mig_retry",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["airpeer", "test", "migrate"],
):
    PythonOperator(task_id="wait", python_callable=_work, retries=1, retry_delay=timedelta(seconds=1))

proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(os.environ["AIRPEER_TEST_PROXIED_STATE"]),
    operator_class=DiesOnFirstTry,
)
