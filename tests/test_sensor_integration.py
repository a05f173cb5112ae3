"""Peering a real Airflow 2.11 and 3.3: definitions load, the sensor records each run end exactly once.

The sensor is evaluated with a real Dagster instance, and its events are stored the way the sensor daemon
stores them (`report_runless_asset_event`, then the cursor), so what is asserted is what a user sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagster_airpeer import (
    RUN_STATUS_CHECK_NAME,
    AirflowBasicAuthBackend,
    AirflowConnectionError,
    AirflowInstance,
    build_defs_from_airflow_instance,
    sanitize_dag_id,
)
from dagster_airpeer.sensor import sensor_name

pytestmark = pytest.mark.integration

DAG_IDS = ("airpeer_ok", "airpeer_fail", "airpeer_two_tasks", "airpeer.dotted-id", "airpeer_flaky")


def _instance(stack: Any, **kwargs: Any) -> AirflowInstance:
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(stack.url, stack.username, stack.password),
        name="peered",
        **kwargs,
    )


@dg.asset_check(asset=dg.AssetKey(["peered", "dag", "airpeer_ok"]))
def ok_dag_output_is_fine() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _defs(stack: Any, tmp_path: Path, **kwargs: Any) -> dg.Definitions:
    return build_defs_from_airflow_instance(
        airflow_instance=_instance(stack),
        defs=dg.Definitions(asset_checks=[ok_dag_output_is_fine]),
        snapshot_dir=tmp_path / "snapshots",
        lookback=timedelta(hours=1),
        late_commit_window=timedelta(seconds=60),
        **kwargs,
    )


class Ticker:
    """Evaluates the sensor and stores its results as the daemon does, keeping the cursor between ticks."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor: str | None = None
        self.run_requests: list[dg.RunRequest] = []

    def tick(self, defs: dg.Definitions) -> dg.SensorResult:
        sensor = defs.get_sensor_def(sensor_name("peered"))
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.run_requests.extend(result.run_requests or [])
        self.cursor = result.cursor
        return result


@pytest.fixture
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _materialized_run_ids(instance: dg.DagsterInstance, dag_id: str) -> list[str]:
    key = dg.AssetKey(["peered", "dag", sanitize_dag_id(dag_id)])
    records = instance.fetch_materializations(key, limit=1000).records
    out = []
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None
        out.append(str(materialization.metadata["airflow/run_id"].value))
    return out


def _check_results(instance: dg.DagsterInstance, dag_id: str) -> list[tuple[str, bool]]:
    key = dg.AssetCheckKey(dg.AssetKey(["peered", "dag", dag_id]), RUN_STATUS_CHECK_NAME)
    out = []
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=1000):
        evaluation = record.event.dagster_event.asset_check_evaluation_data if record.event else None  # type: ignore[union-attr]
        if evaluation is None:
            continue
        out.append((str(evaluation.metadata["airflow/run_id"].value), evaluation.passed))
    return out


def _run(stack: Any, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    run_id = f"airpeer_test_{uuid.uuid4().hex[:10]}"
    client = _instance(stack)
    client.trigger_dag_run(dag_id, run_id=run_id, conf=conf)
    client.wait_for_dag_run(dag_id, run_id, timeout=180)
    return run_id


def test_definitions_describe_every_dag(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(DAG_IDS)
    defs = _defs(airflow, tmp_path)
    graph = defs.resolve_asset_graph()
    for dag_id in DAG_IDS:
        key = dg.AssetKey(["peered", "dag", sanitize_dag_id(dag_id)])
        node = graph.get(key)
        assert node.metadata["airflow/dag_id"] == dag_id
        assert "airflow" in node.kinds
        url = node.metadata["airflow/dag_url"].value
        assert url.startswith(airflow.url) and ("/grid" in url) == (airflow.major == 2)
        assert dg.AssetCheckKey(key, RUN_STATUS_CHECK_NAME) in graph.asset_check_keys
    ok = graph.get(dg.AssetKey(["peered", "dag", "airpeer_ok"]))
    assert ok.description and "airpeer" in ok.description.lower()
    assert "airpeer" in ok.tags and "test" in ok.tags
    assert defs.get_sensor_def(sensor_name("peered")).default_status == dg.DefaultSensorStatus.RUNNING


def test_each_run_end_is_recorded_exactly_once(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    airflow.wait_for_dags(DAG_IDS)
    ticker = Ticker(dagster_instance)
    imported = ticker.tick(_defs(airflow, tmp_path))  # import whatever history the session already has
    # A first import is one event per completion (#13.20): airflow_run_status passes only on a recovery, the
    # first success after a failure recorded in the same import.
    failing: set[str] = set()
    for event in imported.asset_events:
        dag_id = str(event.metadata["airflow/dag_id"].value)  # type: ignore[union-attr]
        if isinstance(event, dg.AssetCheckEvaluation):
            if event.passed:
                assert dag_id in failing, f"a first recorded success of {dag_id} also passed the check"
                failing.discard(dag_id)
            else:
                failing.add(dag_id)

    ok_run, fail_run, dotted_run = (
        _run(airflow, "airpeer_ok"),
        _run(airflow, "airpeer_fail"),
        _run(airflow, "airpeer.dotted-id"),
    )
    result = ticker.tick(_defs(airflow, tmp_path))
    assert _materialized_run_ids(dagster_instance, "airpeer_ok").count(ok_run) == 1
    assert _materialized_run_ids(dagster_instance, "airpeer.dotted-id").count(dotted_run) == 1
    assert fail_run not in _materialized_run_ids(dagster_instance, "airpeer_fail")
    assert (fail_run, False) in _check_results(dagster_instance, "airpeer_fail")
    metadata = next(
        e.metadata
        for e in result.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.metadata["airflow/run_id"].value == ok_run  # type: ignore[union-attr]
    )
    assert metadata["airflow/run_state"].value == "success"
    assert str(metadata["airflow/run_url"].value).startswith(airflow.url)
    # The user's check on the DAG's asset is requested after the new materialization.
    requested = [ck for rr in ticker.run_requests for ck in (rr.asset_check_keys or [])]
    assert (
        dg.AssetCheckKey(dg.AssetKey(["peered", "dag", "airpeer_ok"]), "ok_dag_output_is_fine") in requested
    )

    # A second tick adds nothing; neither does a restarted code location reading the stored cursor.
    assert not ticker.tick(_defs(airflow, tmp_path)).asset_events
    restarted = Ticker(dagster_instance)
    restarted.cursor = ticker.cursor
    assert not restarted.tick(_defs(airflow, tmp_path)).asset_events
    assert _materialized_run_ids(dagster_instance, "airpeer_ok").count(ok_run) == 1


def test_runs_that_end_during_an_api_outage_are_picked_up_once(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    airflow.wait_for_dags(DAG_IDS)
    ticker = Ticker(dagster_instance)
    defs = _defs(airflow, tmp_path)
    ticker.tick(defs)
    # Runs end first: on Airflow 3 the api-server also serves task execution, so it goes down after them.
    runs = [_run(airflow, "airpeer_ok") for _ in range(2)] + [_run(airflow, "airpeer_fail")]
    airflow.stop_api_server()
    try:
        cursor_before = ticker.cursor
        down = _defs(airflow, tmp_path)  # loads from the last good snapshot
        with pytest.raises(AirflowConnectionError) as excinfo:
            ticker.tick(down)
        assert airflow.url in str(excinfo.value)
        assert airflow.password not in str(excinfo.value)
        assert ticker.cursor == cursor_before
    finally:
        airflow.start_api_server()
    ticker.tick(_defs(airflow, tmp_path))
    ok_ids = _materialized_run_ids(dagster_instance, "airpeer_ok")
    assert ok_ids.count(runs[0]) == 1 and ok_ids.count(runs[1]) == 1
    assert [r for r, passed in _check_results(dagster_instance, "airpeer_fail") if r == runs[2]] == [runs[2]]
    assert not ticker.tick(_defs(airflow, tmp_path)).asset_events


def test_load_without_airflow_uses_last_snapshot_or_says_why(airflow: Any, tmp_path: Path) -> None:
    airflow.wait_for_dags(DAG_IDS)
    _defs(airflow, tmp_path)  # stores a snapshot
    unreachable = AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(airflow.url, airflow.username, airflow.password), name="peered"
    )
    # Same URL, Airflow stopped: the last good snapshot is served.
    airflow.stop_api_server()
    try:
        defs = build_defs_from_airflow_instance(
            airflow_instance=unreachable, snapshot_dir=tmp_path / "snapshots"
        )
        keys = {k for k in defs.resolve_asset_graph().get_all_asset_keys()}
        assert dg.AssetKey(["peered", "dag", "airpeer_ok"]) in keys
        # No snapshot at all: a clear error naming the instance and what to do.
        with pytest.raises(Exception, match=r"peered.*No earlier snapshot"):
            build_defs_from_airflow_instance(airflow_instance=unreachable, snapshot_dir=tmp_path / "empty")
    finally:
        airflow.start_api_server()


def test_a_dag_that_recovers_passes_its_run_status_check_again(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    airflow.wait_for_dags(DAG_IDS)
    ticker = Ticker(dagster_instance)
    ticker.tick(_defs(airflow, tmp_path))
    failed = _run(airflow, "airpeer_flaky", conf={"fail": True})
    ticker.tick(_defs(airflow, tmp_path))
    first_ok, second_ok = _run(airflow, "airpeer_flaky"), _run(airflow, "airpeer_flaky")
    ticker.tick(_defs(airflow, tmp_path))
    results = [
        (r, passed)
        for r, passed in _check_results(dagster_instance, "airpeer_flaky")
        if r in {failed, first_ok, second_ok}
    ]
    # Newest first: the recovery passes the check, the next success needs no second event.
    assert results == [(first_ok, True), (failed, False)]
    assert _materialized_run_ids(dagster_instance, "airpeer_flaky")[:2] == [second_ok, first_ok]


def test_executing_the_run_status_check_reports_airflows_latest_run(
    airflow: Any, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    """'Execute all' on the checks tab must not turn the check into an execution failure."""
    airflow.wait_for_dags(DAG_IDS)
    _run(airflow, "airpeer_ok")
    fail_run = _run(airflow, "airpeer_fail")
    defs = _defs(airflow, tmp_path)
    keys = [
        dg.AssetCheckKey(dg.AssetKey(["peered", "dag", dag]), RUN_STATUS_CHECK_NAME)
        for dag in ("airpeer_ok", "airpeer_fail", "airpeer_two_tasks")
    ]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(keys)
    )
    result = job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert result.success
    evaluations = {e.asset_check_key.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert evaluations["airpeer_ok"].passed
    assert not evaluations["airpeer_fail"].passed
    assert evaluations["airpeer_fail"].metadata["airflow/run_id"].value == fail_run
