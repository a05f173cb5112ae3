"""The task-instance listing and feed against real Airflow 2.11 and 3.3: the batch listing filtered by DAG, and
the listing of every DAG (on Airflow 2 its GET endpoint, as the batch one turns many DAG ids into an OR chain
that SQLite refuses), find the same task instances, and the feed delivers them once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance
from dagster_airpeer.airflow.instance import V1_MAX_DAG_FILTER
from dagster_airpeer.feed import FeedState, TaskCompletionFeed

pytestmark = pytest.mark.integration

DAG_ID = "airpeer_two_tasks"


def test_task_instances_by_dag_and_of_every_dag_agree_and_are_delivered_once(airflow: Any) -> None:
    airflow.wait_for_dags([DAG_ID])
    client = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="ti_feed"
    )
    run_id = f"airpeer_ti_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(DAG_ID, run_id=run_id)
    run = client.wait_for_dag_run(DAG_ID, run_id, timeout=180)
    assert run.start_date is not None and run.end_date is not None
    lo, hi = run.start_date - timedelta(seconds=1), run.end_date + timedelta(seconds=1)

    def mine(page: Any) -> set[tuple[str, str]]:
        return {(ti.task_id, ti.state) for ti in page.task_instances if ti.run_id == run_id}

    by_dag = client.list_finished_task_instances(
        end_date_gte=lo, end_date_lte=hi, dag_ids=[DAG_ID], limit=100
    )
    every = client.list_finished_task_instances(end_date_gte=lo, end_date_lte=hi, limit=100)
    many = client.list_finished_task_instances(
        end_date_gte=lo,
        end_date_lte=hi,
        dag_ids=[DAG_ID, *(f"x{i}" for i in range(V1_MAX_DAG_FILTER))],
        limit=100,
    )
    expected = {(ti.task_id, "success") for ti in client.list_task_instances(DAG_ID, run_id)}
    assert len(expected) == 2
    assert mine(by_dag) == mine(every) == mine(many) == expected

    feed = TaskCompletionFeed(client, late_commit_window=timedelta(seconds=60), page_size=3)
    state = FeedState(watermark=lo)
    delivered = []
    for dag_ids in ([DAG_ID], None, [DAG_ID]):
        result = feed.poll(state, dag_ids=dag_ids)
        delivered.extend(ti for ti in result.completions if ti.run_id == run_id)
        state = result.state
    assert sorted((ti.task_id, ti.state) for ti in delivered) == sorted(expected)
