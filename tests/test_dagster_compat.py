"""Pins the private Dagster APIs that `dagster_airpeer._dagster_compat` wraps: fails loudly when Dagster moves them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from dagster_airpeer import _dagster_compat as compat


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def test_sensor_timeout_is_dagsters_default_and_follows_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("DAGSTER_GRPC_TIMEOUT_SECONDS", raising=False)
    assert compat.sensor_evaluation_timeout_seconds() == 60
    monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "90")
    assert compat.sensor_evaluation_timeout_seconds() == 90
    monkeypatch.setenv("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "120")
    assert compat.sensor_evaluation_timeout_seconds() == 120


def test_runless_events_are_stored_under_the_runless_run_id(instance: dg.DagsterInstance) -> None:
    key = dg.AssetKey(["a"])
    assert compat.latest_runless_storage_id(instance) is None
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"n": 0}))
    first = compat.latest_runless_storage_id(instance)
    assert first is not None
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=key, check_name="c", passed=False, metadata={"n": 1})
    )
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=key))  # not an event airpeer stores
    after = list(compat.runless_asset_records_after(instance, first))
    assert len(after) == 1
    evaluation = after[0].event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
    assert isinstance(evaluation, dg.AssetCheckEvaluation) and evaluation.metadata["n"].value == 1
    assert compat.latest_runless_storage_id(instance) == after[0].storage_id
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert len(list(compat.runless_asset_records_since(instance, since))) == 2
    assert list(compat.runless_asset_records_since(instance, datetime.now(timezone.utc) + timedelta(1))) == []


def test_scans_page_through_more_than_one_page(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "_PAGE", 3)
    start = time.time() - 1
    for i in range(7):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey(["p"]), metadata={"i": i})
        )
    records = list(compat.runless_asset_records_after(instance, 0))
    assert len(records) == 7 and [r.storage_id for r in records] == sorted(r.storage_id for r in records)
    since = datetime.fromtimestamp(start, tz=timezone.utc)
    assert len(list(compat.runless_asset_records_since(instance, since))) == 7


def test_latest_check_evaluations_reads_the_history_a_wipe_clears(instance: dg.DagsterInstance) -> None:
    key = dg.AssetKey(["w"])
    check = dg.AssetCheckKey(key, "c")
    for passed in (False, True):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=key, check_name="c", passed=passed, metadata={"p": passed})
        )
    latest = compat.latest_check_evaluations(instance, [check, dg.AssetCheckKey(key, "never")])
    assert list(latest) == [check] and latest[check].passed is True
    instance.wipe_assets([key])
    assert compat.latest_check_evaluations(instance, [check]) == {}
    assert len(list(compat.runless_asset_records_after(instance, 0))) == 2  # the raw rows stay


def test_sensor_states_are_found_by_name_and_their_cursor_replaced(tmp_path: Path) -> None:
    """The instigator state as Dagster's own `dagster sensor cursor --set` writes it (used by `airpeer clean`)."""
    from dagster._core.scheduler.instigation import SensorInstigatorData

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    name = "unit_peered__airflow_dag_runs"
    written = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "sensor",
            "cursor",
            "-f",
            str(Path(__file__).parent / "defs" / "clean_sensor_only.py"),
            name,
            "--set",
            "first",
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert compat.stored_sensor_states(instance, "another_sensor") == []
        (state,) = compat.stored_sensor_states(instance, name)
        assert (state.name, state.cursor, state.min_interval, state.running) == (name, "first", 30, False)
        assert state.last_finished_tick is None and state.last_started_tick is None
        before = instance.get_instigator_state(state.origin_id, state.selector_id)
        assert before is not None and isinstance(before.instigator_data, SensorInstigatorData)
        compat.set_stored_sensor_cursor(instance, state, "second")
        after = instance.get_instigator_state(state.origin_id, state.selector_id)
        assert after is not None and isinstance(after.instigator_data, SensorInstigatorData)
        assert after.instigator_data.cursor == "second"
        assert {**after.instigator_data._asdict(), "cursor": "first"} == before.instigator_data._asdict()
        assert after.status == before.status
        (reread,) = compat.stored_sensor_states(instance, name)
        assert reread.cursor == "second"
    # The fields `airpeer clean` reads to tell a tick in flight (the real daemon test in tests/test_clean.py
    # checks their meaning).
    assert {"cursor", "min_interval", "last_tick_timestamp", "last_tick_start_timestamp"} <= set(
        SensorInstigatorData._fields
    )


def test_sensor_daemon_heartbeat(instance: dg.DagsterInstance) -> None:
    from dagster._daemon.daemon import SensorDaemon
    from dagster._daemon.types import DaemonHeartbeat

    assert SensorDaemon.daemon_type() == "SENSOR"
    assert compat.latest_sensor_daemon_heartbeat(instance) is None
    now = time.time()
    instance.add_daemon_heartbeat(DaemonHeartbeat(now, "SENSOR", "test", None))
    assert compat.latest_sensor_daemon_heartbeat(instance) == pytest.approx(now)


def test_repository_check_keys_include_checks_of_merged_definitions() -> None:
    key = dg.AssetKey(["k"])

    @dg.asset_check(asset=key)
    def merged() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    defs = dg.Definitions.merge(
        dg.Definitions(assets=[dg.AssetSpec(key)]), dg.Definitions(asset_checks=[merged])
    )
    assert compat.repository_check_keys(defs.get_repository_def()) == {merged.check_key}


def test_latest_sensor_tick_reads_status_time_and_first_error_line(instance: dg.DagsterInstance) -> None:
    """`airpeer doctor` shows the latest tick of the sensor's stored state (origin + selector ids)."""
    from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
    from dagster._utils.error import SerializableErrorInfo

    state = compat.StoredSensorState(
        name="s", origin_id="origin", selector_id="selector", running=True, cursor=None, min_interval=30,
        last_finished_tick=None, last_started_tick=None,
    )  # fmt: skip
    assert compat.latest_sensor_tick(instance, state) is None

    def tick(status: TickStatus, at: float, error: SerializableErrorInfo | None = None) -> None:
        instance.create_tick(
            TickData(
                instigator_origin_id="origin", instigator_name="s", instigator_type=InstigatorType.SENSOR,
                status=status, timestamp=at, selector_id="selector", error=error, run_ids=[],
            )
        )  # fmt: skip

    tick(TickStatus.SUCCESS, 1000.0)
    assert compat.latest_sensor_tick(instance, state) == compat.SensorTick("success", 1000.0, None)
    tick(TickStatus.FAILURE, 2000.0, SerializableErrorInfo("boom: Airflow refused\nmore lines", [], "Error"))
    assert compat.latest_sensor_tick(instance, state) == compat.SensorTick(
        "failure", 2000.0, "boom: Airflow refused"
    )
    assert {s.value for s in TickStatus} == {"STARTED", "SKIPPED", "SUCCESS", "FAILURE"}


def test_time_partition_key_for_finds_the_window_of_an_instant_and_none_outside() -> None:
    from datetime import datetime, timezone

    import dagster as dg

    from dagster_airpeer._dagster_compat import time_partition_key_for

    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-02-01")
    assert time_partition_key_for(daily, datetime(2026, 1, 5, 13, tzinfo=timezone.utc)) == "2026-01-05"
    assert time_partition_key_for(daily, datetime(2026, 1, 5, tzinfo=timezone.utc)) == "2026-01-05"
    assert time_partition_key_for(daily, datetime(2025, 12, 31, 23, tzinfo=timezone.utc)) is None
    assert time_partition_key_for(daily, datetime(2026, 3, 1, tzinfo=timezone.utc)) is None
