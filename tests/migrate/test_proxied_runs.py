"""`ProxiedRuns` against a real (test) Dagster instance: runs tagged by the proxy tell which task instances ran
in Dagster, matched on (dag_id, run_id, task_id) of one Airflow instance, with one query per span of starts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from dagster_airpeer.airflow.models import TaskInstance
from dagster_airpeer.in_airflow.naming import DAG_ID_TAG, INSTANCE_TAG, RUN_ID_TAG, TASK_ID_TAG
from dagster_airpeer.migrate import ProxiedRuns


@dg.asset
def proxied_asset() -> None:
    """Stands for an asset a proxied task materializes."""


def _ti(dag_id: str, run_id: str, task_id: str, start: datetime) -> TaskInstance:
    return TaskInstance(
        dag_id=dag_id, run_id=run_id, task_id=task_id, state="success", start_date=start, end_date=start
    )


def test_task_instances_with_a_tagged_dagster_run_ran_in_dagster() -> None:
    job = dg.define_asset_job("proxy_job", selection=[proxied_asset])
    defs = dg.Definitions(assets=[proxied_asset], jobs=[job])
    now = datetime.now(timezone.utc)
    with dg.instance_for_test() as instance:
        for airflow_instance, run_id in (("inst", "scheduled__1"), ("other", "scheduled__2")):
            result = defs.get_job_def("proxy_job").execute_in_process(
                instance=instance,
                tags={
                    INSTANCE_TAG: airflow_instance,
                    DAG_ID_TAG: "d",
                    RUN_ID_TAG: run_id,
                    TASK_ID_TAG: "load",
                },
            )
            assert result.success
        runs = ProxiedRuns(instance, "inst")
        assert runs.ran_in_dagster(_ti("d", "scheduled__1", "load", now - timedelta(minutes=1)))
        # Another task, another Airflow run, or the same ids on another Airflow instance: not proxied here.
        assert not runs.ran_in_dagster(_ti("d", "scheduled__1", "export", now))
        assert not runs.ran_in_dagster(_ti("d", "scheduled__2", "load", now))
        assert not runs.ran_in_dagster(_ti("other_dag", "scheduled__1", "load", now))
        assert runs.queries == 1
        # A task instance that started earlier than any asked so far widens the span once.
        assert not runs.ran_in_dagster(_ti("d", "manual__0", "load", now - timedelta(hours=2)))
        assert runs.queries == 2
