"""Definitions built from a stored snapshot while Airflow is down (a real closed port, no fake)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from dagster_airpeer import (
    RUN_STATUS_CHECK_NAME,
    AirflowBasicAuthBackend,
    AirflowConfigError,
    AirflowInstance,
    Dag,
    DagsterAirflowTranslator,
    SnapshotUnavailableError,
    build_defs_from_airflow_instance,
    sanitize_dag_id,
)
from dagster_airpeer.sensor import sensor_name
from dagster_airpeer.snapshot import AirflowSnapshot, snapshot_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def down() -> AirflowInstance:
    url = f"http://127.0.0.1:{_closed_port()}"
    return AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(url, "admin", "hunter2-secret"), name="inst", max_retries=0
    )


def _store(tmp_path: Path, instance: AirflowInstance, dags: list[Dag], api_version: str = "v2") -> Path:
    snap = AirflowSnapshot(
        instance_name=instance.name,
        webserver_url=instance.webserver_url,
        api_version=api_version,
        fetched_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        dags=tuple(dags),
    )
    path = snapshot_path(tmp_path, instance.name)
    path.write_text(snap.model_dump_json())
    return path


def test_no_snapshot_is_a_clear_error_without_secrets(down: AirflowInstance, tmp_path: Path) -> None:
    with pytest.raises(SnapshotUnavailableError) as excinfo:
        build_defs_from_airflow_instance(airflow_instance=down, snapshot_dir=tmp_path)
    message = str(excinfo.value)
    assert "'inst'" in message and down.webserver_url in message and "hunter2" not in message
    assert "snapshot" in message


def test_snapshot_builds_assets_checks_sensor_and_user_check_job(
    down: AirflowInstance, tmp_path: Path
) -> None:
    _store(tmp_path, down, [Dag(dag_id="a"), Dag(dag_id="b.c-d", tags=("x",)), Dag(dag_id="odd id")], "v1")

    @dg.asset_check(asset=dg.AssetKey(["inst", "dag", "a"]))
    def a_is_fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    @dg.asset
    def unrelated() -> None: ...

    defs = build_defs_from_airflow_instance(
        airflow_instance=down,
        snapshot_dir=tmp_path,
        defs=dg.Definitions(assets=[unrelated], asset_checks=[a_is_fine]),
    )
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {
        dg.AssetKey(["inst", "dag", "a"]),
        dg.AssetKey(["inst", "dag", sanitize_dag_id("b.c-d")]),
        dg.AssetKey("unrelated"),
    } <= keys
    assert any(k.path[2].startswith("odd_id__") for k in keys if len(k.path) == 3)
    assert (
        graph.get(dg.AssetKey(["inst", "dag", "a"]))
        .metadata["airflow/dag_url"]
        .value.endswith("/dags/a/grid")
    )
    assert (
        dg.AssetCheckKey(dg.AssetKey(["inst", "dag", "a"]), RUN_STATUS_CHECK_NAME) in graph.asset_check_keys
    )
    job = defs.resolve_job_def("inst__dag_asset_checks")
    assert job is not None
    sensor = defs.get_sensor_def(sensor_name("inst"))
    assert sensor.minimum_interval_seconds == 30


def test_selector_and_translator_apply(down: AirflowInstance, tmp_path: Path) -> None:
    _store(tmp_path, down, [Dag(dag_id="keep", tags=("team-a",)), Dag(dag_id="drop")])

    class Grouped(DagsterAirflowTranslator):
        def get_group_name(self, dag: Dag) -> str | None:
            return "airflow"

    defs = build_defs_from_airflow_instance(
        airflow_instance=down,
        snapshot_dir=tmp_path,
        translator=Grouped(),
        dag_selector_fn=lambda d: "team-a" in d.tags,
    )
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["inst", "dag", "drop"]) not in graph.get_all_asset_keys()
    assert graph.get(dg.AssetKey(["inst", "dag", "keep"])).group_name == "airflow"


def test_two_dags_on_one_key_is_an_error(down: AirflowInstance, tmp_path: Path) -> None:
    _store(tmp_path, down, [Dag(dag_id="a"), Dag(dag_id="b")])

    class Same(DagsterAirflowTranslator):
        def get_asset_key(self, instance_name: str, dag: Dag) -> dg.AssetKey:
            return dg.AssetKey("same")

    with pytest.raises(AirflowConfigError, match="same asset key"):
        build_defs_from_airflow_instance(airflow_instance=down, snapshot_dir=tmp_path, translator=Same())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sensor_minimum_interval_seconds": 0}, "sensor_minimum_interval_seconds"),
        ({"tick_time_budget_seconds": 90}, "tick_time_budget_seconds"),
        ({"max_runs_per_tick": 0}, "max_runs_per_tick"),
        ({"max_parallel_requests": 0}, "max_parallel_requests"),
        ({"late_commit_window": timedelta(minutes=-1)}, "late_commit_window"),
        # Wrong types (a value read from an environment variable is a string) name the setting too.
        ({"max_parallel_requests": "4"}, "max_parallel_requests must be a whole number, got '4'"),
        ({"max_runs_per_tick": True}, "max_runs_per_tick"),
        ({"lookback": 3600}, "lookback must be a datetime.timedelta"),
        ({"tick_time_budget_seconds": "8"}, "tick_time_budget_seconds must be a number of seconds"),
    ],
)
def test_bad_settings_name_the_setting(
    down: AirflowInstance, tmp_path: Path, kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=named):
        build_defs_from_airflow_instance(airflow_instance=down, snapshot_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_wrong_instance_type_is_named() -> None:
    with pytest.raises(AirflowConfigError, match="AirflowInstance"):
        build_defs_from_airflow_instance(airflow_instance="http://localhost:8080")  # type: ignore[arg-type]
