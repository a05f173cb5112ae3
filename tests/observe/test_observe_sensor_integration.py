"""The observe stage's sensor against real Airflow 2.11 and 3.3: each mapped asset recorded as its task ends.

Covers: a task recorded while its run still runs, a retry that succeeds (one completion), a cleared task that
runs again (a new completion), a mapped ``.expand`` task (once, with its count), a run that fails after
successful tasks (their assets recorded, the failed task's check failing), and a restart from the cursor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import (
    AirflowBasicAuthBackend,
    AirflowInstance,
    assets_with_task_mappings,
    build_defs_from_airflow_instance,
)
from dagster_airpeer.observe.events import TASK_STATUS_CHECK_NAME
from dagster_airpeer.sensor import sensor_name

pytestmark = pytest.mark.integration

STEPS, OBSERVE = "airpeer_observe_steps", "airpeer_observe"


def _instance(stack: Any) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(stack.url, stack.username, stack.password), name="observed"
    )


def _defs(stack: Any, tmp_path: Path) -> dg.Definitions:
    mappings = [
        *assets_with_task_mappings(
            dag_id=STEPS,
            task_mappings={
                "first": [dg.AssetSpec("first_out")],
                "gate": [dg.AssetSpec("gate_out", deps=["first_out"])],
                "retried": [dg.AssetSpec("retried_out", deps=["gate_out"])],
            },
        ),
        *assets_with_task_mappings(
            dag_id=OBSERVE,
            task_mappings={
                "extract": [dg.AssetSpec("extracted")],
                "transform": [dg.AssetSpec("transformed", deps=["extracted"])],
                "load": [dg.AssetSpec("loaded", deps=["transformed"])],
            },
        ),
    ]
    return build_defs_from_airflow_instance(
        airflow_instance=_instance(stack),
        defs=dg.Definitions(assets=mappings),
        snapshot_dir=tmp_path / "snapshots",
        dag_selector_fn=lambda dag: dag.dag_id in (STEPS, OBSERVE),
        lookback=timedelta(minutes=1),
        late_commit_window=timedelta(seconds=60),
    )


class Ticker:
    """Evaluates the sensor and stores its events as the daemon does, keeping the cursor between ticks."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
        self.instance, self.defs = instance, defs
        self.cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        sensor = self.defs.get_sensor_def(sensor_name("observed"))
        result = sensor(
            dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs)
        )
        assert isinstance(result, dg.SensorResult)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.cursor = result.cursor
        return result

    def until(self, done: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            if done():
                return
            assert time.monotonic() < deadline, "the sensor did not record what was expected in time"
            time.sleep(1.0)


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _materializations(instance: dg.DagsterInstance, key: str, run_id: str) -> list[dg.AssetMaterialization]:
    records = instance.fetch_materializations(dg.AssetKey(key), limit=1000).records
    found = [r.asset_materialization for r in records if r.asset_materialization is not None]
    return [m for m in found if m.metadata["airflow/run_id"].value == run_id]  # type: ignore[attr-defined]


def _task_checks(instance: dg.DagsterInstance, key: str, run_id: str) -> list[bool]:
    check_key = dg.AssetCheckKey(dg.AssetKey(key), TASK_STATUS_CHECK_NAME)
    out = []
    for record in instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1000):
        evaluation = record.event.dagster_event.asset_check_evaluation_data if record.event else None  # type: ignore[union-attr]
        if evaluation is not None and evaluation.metadata["airflow/run_id"].value == run_id:
            out.append(evaluation.passed)
    return out


def _wait_task(
    client: AirflowInstance, dag_id: str, run_id: str, task_id: str, timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while not any(
        ti.task_id == task_id and ti.state == "success" for ti in client.list_task_instances(dag_id, run_id)
    ):
        assert time.monotonic() < deadline, f"task {task_id} did not succeed"
        time.sleep(0.5)


def _clear(client: AirflowInstance, dag_id: str, run_id: str, task_id: str) -> None:
    client._http.call(
        "POST",
        f"/api/{client.api_version}/dags/{dag_id}/clearTaskInstances",
        what="clear a task instance",
        json_body={
            "dry_run": False,
            "task_ids": [task_id],
            "dag_run_id": run_id,
            "only_failed": False,
            "reset_dag_runs": True,
        },
        parse=lambda response: None,
    )


def test_task_assets_are_recorded_as_tasks_end_exactly_once(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    airflow.wait_for_dags([STEPS, OBSERVE])
    client = _instance(airflow)
    defs = _defs(airflow, tmp_path)
    ticker = Ticker(dagster_instance, defs)
    ticker.tick()  # import what the session's earlier runs left

    gate = tmp_path / "gate"
    run_id = f"airpeer_obs_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(STEPS, run_id=run_id, conf={"gate": str(gate), "fail_first_try": True})
    _wait_task(client, STEPS, run_id, "first")
    # Recorded while its run still runs (`gate` waits for the file).
    ticker.until(lambda: len(_materializations(dagster_instance, "first_out", run_id)) == 1)
    assert client.get_dag_run(STEPS, run_id).state == "running"
    assert not _materializations(dagster_instance, "gate_out", run_id)

    gate.touch()
    client.wait_for_dag_run(STEPS, run_id, timeout=180)
    ticker.until(lambda: bool(_materializations(dagster_instance, "retried_out", run_id)))
    retried = _materializations(dagster_instance, "retried_out", run_id)
    # The failed first try was retried: one completion, of try 2.
    assert [m.metadata["airflow/try_number"].value for m in retried] == [2]  # type: ignore[attr-defined]
    assert len(_materializations(dagster_instance, "gate_out", run_id)) == 1

    # Cleared and run again: a new completion of `retried`, nothing new for the others.
    _clear(client, STEPS, run_id, "retried")
    deadline = time.monotonic() + 120
    while len(_materializations(dagster_instance, "retried_out", run_id)) < 2:
        assert time.monotonic() < deadline, "the cleared task's new completion was not recorded"
        ticker.tick()
        time.sleep(1.0)
    assert len(_materializations(dagster_instance, "first_out", run_id)) == 1

    # A run that fails after successful tasks: their assets are recorded, the failed task's check fails.
    failed_run = f"airpeer_obs_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(OBSERVE, run_id=failed_run, conf={"fail_load": True})
    client.wait_for_dag_run(OBSERVE, failed_run, timeout=180)
    ticker.until(lambda: _task_checks(dagster_instance, "loaded", failed_run) == [False])
    assert len(_materializations(dagster_instance, "extracted", failed_run)) == 1
    transformed = _materializations(dagster_instance, "transformed", failed_run)
    # The mapped task: once per run, when its last map index succeeded, with the count.
    assert [m.metadata["airflow/map_count"].value for m in transformed] == [3]  # type: ignore[attr-defined]
    assert not _materializations(dagster_instance, "loaded", failed_run)

    # More ticks, and a restarted code location reading the stored cursor, add nothing.
    ticker.tick()
    restarted = Ticker(dagster_instance, _defs(airflow, tmp_path))
    restarted.cursor = ticker.cursor
    assert not [e for e in restarted.tick().asset_events if isinstance(e, dg.AssetMaterialization)]
    for key, run, count in (
        ("first_out", run_id, 1),
        ("gate_out", run_id, 1),
        ("retried_out", run_id, 2),
        ("extracted", failed_run, 1),
        ("transformed", failed_run, 1),
    ):
        assert len(_materializations(dagster_instance, key, run)) == count, key


PRODUCER, CONSUMER = "airpeer_dataset_producer", "airpeer_dataset_consumer"


def test_airflow_asset_events_are_recorded_once_with_lineage(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    from dagster_airpeer.airflow.assets import list_airflow_assets, post_asset_event
    from dagster_airpeer.observe.airflow_assets import key_of_asset

    airflow.wait_for_dags([PRODUCER, CONSUMER, STEPS])
    client = _instance(airflow)
    defs = build_defs_from_airflow_instance(
        airflow_instance=client,
        # Any mapping turns the observe stage on, and Airflow's assets with it.
        defs=dg.Definitions(
            assets=assets_with_task_mappings(
                dag_id=STEPS, task_mappings={"first": [dg.AssetSpec("first_out")]}
            )
        ),
        snapshot_dir=tmp_path / "snapshots",
        dag_selector_fn=lambda dag: dag.dag_id in (STEPS, PRODUCER, CONSUMER),
        lookback=timedelta(minutes=1),
        late_commit_window=timedelta(seconds=60),
    )
    asset = next(a for a in list_airflow_assets(client) if a.uri.endswith("data_set.v1/out.csv"))
    key = key_of_asset("observed", asset)
    graph = defs.resolve_asset_graph()
    producer_key, consumer_key = (dg.AssetKey(["observed", "dag", d]) for d in (PRODUCER, CONSUMER))
    assert producer_key in graph.get(key).parent_keys
    assert key in graph.get(consumer_key).parent_keys

    ticker = Ticker(dagster_instance, defs)
    ticker.tick()

    def recorded() -> list[dg.AssetMaterialization]:
        found = [
            r.asset_materialization for r in dagster_instance.fetch_materializations(key, limit=1000).records
        ]
        return [m for m in found if m is not None]

    before = {m.metadata["airflow/asset_event_id"].value for m in recorded()}  # type: ignore[attr-defined]
    run_id = f"airpeer_obs_{uuid.uuid4().hex[:8]}"
    client.trigger_dag_run(PRODUCER, run_id=run_id)
    client.wait_for_dag_run(PRODUCER, run_id, timeout=180)
    ticker.until(
        lambda: any(
            m.metadata.get("airflow/source_run_id") and m.metadata["airflow/source_run_id"].value == run_id
            for m in recorded()
        )  # type: ignore[union-attr]
    )
    posted = post_asset_event(
        AirflowInstance(
            auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password),
            name="observed",
            max_retries=0,
        ),
        asset,
        extra={"posted_by": "airpeer test"},
    )
    ticker.until(lambda: posted.id in {m.metadata["airflow/asset_event_id"].value for m in recorded()})  # type: ignore[attr-defined]
    ticker.tick()
    restarted = Ticker(dagster_instance, defs)
    restarted.cursor = ticker.cursor
    restarted.tick()
    new = [m.metadata["airflow/asset_event_id"].value for m in recorded()]  # type: ignore[attr-defined]
    new = [event_id for event_id in new if event_id not in before]
    assert len(new) == len(set(new)) == 2, new
