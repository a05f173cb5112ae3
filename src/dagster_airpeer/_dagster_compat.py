"""The one place airpeer reaches into Dagster's private modules; each use is pinned by tests/test_dagster_compat.py.

Public Dagster APIs come first everywhere else. What is here has no public equivalent (checked on Dagster 1.12
and 1.13): when Dagster moves one of these, the compat test fails loudly instead of airpeer silently changing
behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from dagster._core.event_api import EventLogCursor
from dagster._core.events import DagsterEventType
from dagster._core.instance.utils import RUNLESS_RUN_ID
from dagster._core.scheduler.instigation import (
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
    TickStatus,
)
from dagster._grpc.utils import default_sensor_grpc_timeout

__all__ = [
    "RUNLESS_RUN_ID",
    "SensorTick",
    "StoredSensorState",
    "latest_check_evaluations",
    "latest_runless_storage_id",
    "latest_sensor_daemon_heartbeat",
    "latest_sensor_tick",
    "repository_check_keys",
    "runless_asset_records_after",
    "runless_asset_records_since",
    "sensor_evaluation_timeout_seconds",
    "set_stored_sensor_cursor",
    "stored_sensor_states",
    "time_partition_key_for",
]

#: The event types a sensor's `SensorResult.asset_events` are stored as.
_ASSET_EVENT_TYPES = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION}

#: Records read per query while scanning the runless event log.
_PAGE = 1000


def sensor_evaluation_timeout_seconds() -> int:
    """How long Dagster lets one sensor evaluation run before it abandons the tick (60 s by default).

    Dagster reads it from `DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS` (falling back to `DAGSTER_GRPC_TIMEOUT_SECONDS`)
    in the process that asks for the evaluation (the daemon); the code server that builds airpeer's
    definitions is started with the same environment unless you deploy it separately.
    """
    return int(default_sensor_grpc_timeout())


def latest_runless_storage_id(instance: dg.DagsterInstance) -> int | None:
    """The storage id of the newest runless materialization or check evaluation (None: there is none)."""
    connection = instance.get_records_for_run(
        RUNLESS_RUN_ID, of_type=_ASSET_EVENT_TYPES, limit=1, ascending=False
    )
    return connection.records[0].storage_id if connection.records else None


def runless_asset_records_after(instance: dg.DagsterInstance, storage_id: int) -> Iterator[dg.EventLogRecord]:
    """Runless materializations and check evaluations stored after `storage_id`, oldest first."""
    cursor = EventLogCursor.from_storage_id(storage_id).to_string()
    while True:
        connection = instance.get_records_for_run(
            RUNLESS_RUN_ID, cursor=cursor, of_type=_ASSET_EVENT_TYPES, limit=_PAGE, ascending=True
        )
        yield from connection.records
        if len(connection.records) < _PAGE:
            return
        cursor = EventLogCursor.from_storage_id(connection.records[-1].storage_id).to_string()


def runless_asset_records_since(instance: dg.DagsterInstance, since: datetime) -> Iterator[dg.EventLogRecord]:
    """Runless materializations and check evaluations stored at or after `since` (Dagster's clock), newest
    first. Storage ids grow with the time of storing, so the scan stops at the first older record."""
    floor = since.timestamp()
    cursor: str | None = None
    while True:
        connection = instance.get_records_for_run(
            RUNLESS_RUN_ID, cursor=cursor, of_type=_ASSET_EVENT_TYPES, limit=_PAGE, ascending=False
        )
        for record in connection.records:
            if record.event_log_entry.timestamp < floor:
                return
            yield record
        if len(connection.records) < _PAGE:
            return
        cursor = EventLogCursor.from_storage_id(connection.records[-1].storage_id).to_string()


# Sensor cursors, for `airpeer clean`. A cursor lives in the instigator state the daemon stores per sensor and
# code location origin. `dagster sensor cursor --set` rewrites it through DagsterInstance.update_instigator_state
# after loading the workspace to learn the origin; clean finds the states by sensor name instead, so it needs no
# workspace (and also reaches a state stored under an origin that `dagster dev` computed from its own paths).


@dataclass(frozen=True)
class StoredSensorState:
    """What `airpeer clean` reads from one stored sensor state (Dagster's `InstigatorState`)."""

    name: str
    origin_id: str
    selector_id: str
    running: bool
    cursor: str | None
    #: The sensor's minimum interval between ticks (seconds), as the daemon last stored it.
    min_interval: int | None
    #: Start time (Dagster's clock, epoch seconds) of the latest tick that finished and stored its cursor.
    last_finished_tick: float | None
    #: Start time of the latest tick begun: later than `last_finished_tick` while a tick is in flight.
    last_started_tick: float | None


def stored_sensor_states(instance: dg.DagsterInstance, sensor_name: str) -> list[StoredSensorState]:
    """Every stored state of a sensor with this name (one per code location origin that ever ran it)."""
    found = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name != sensor_name:
            continue
        data = state.instigator_data
        sensor_data = data if isinstance(data, SensorInstigatorData) else None
        found.append(
            StoredSensorState(
                name=state.name,
                origin_id=state.instigator_origin_id,
                selector_id=state.selector_id,
                running=state.status in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE),
                cursor=sensor_data.cursor if sensor_data else None,
                min_interval=sensor_data.min_interval if sensor_data else None,
                last_finished_tick=sensor_data.last_tick_timestamp if sensor_data else None,
                last_started_tick=sensor_data.last_tick_start_timestamp if sensor_data else None,
            )
        )
    return found


def set_stored_sensor_cursor(instance: dg.DagsterInstance, state: StoredSensorState, cursor: str) -> None:
    """Replace the cursor of a stored sensor state, keeping every other field (as `dagster sensor cursor --set`)."""
    stored = instance.get_instigator_state(state.origin_id, state.selector_id)
    if stored is None or not isinstance(stored.instigator_data, SensorInstigatorData):
        return  # deleted meanwhile: no cursor left to reset
    instance.update_instigator_state(stored.with_data(stored.instigator_data._replace(cursor=cursor)))


def latest_sensor_daemon_heartbeat(instance: dg.DagsterInstance) -> float | None:
    """When the sensor daemon of this instance last reported alive (epoch seconds), None if never."""
    heartbeat = instance.get_daemon_heartbeats().get("SENSOR")
    return float(heartbeat.timestamp) if heartbeat is not None else None


def latest_check_evaluations(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    """The latest evaluation still in each check's execution history (one query for all keys).

    Dagster's `wipe_assets` clears that history but keeps the raw ASSET_CHECK_EVALUATION rows of the event
    log (tests/test_clean.py pins it), so only this history tells whether a raw row still counts.
    """
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(check_keys))
    out: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation] = {}
    for key, record in latest.items():
        event = record.event.dagster_event if record.event is not None else None
        data = event.event_specific_data if event is not None else None
        if isinstance(data, dg.AssetCheckEvaluation):
            out[key] = data
    return out


def repository_check_keys(repository: dg.RepositoryDefinition) -> set[dg.AssetCheckKey]:
    """Every asset check key of a code location's repository, whichever `Definitions` brought it in."""
    return set(repository.asset_graph.asset_check_keys)


@dataclass(frozen=True)
class SensorTick:
    """What `airpeer doctor` reads from a sensor's latest tick (Dagster's `InstigatorTick`)."""

    #: "started", "skipped", "success" or "failure".
    status: str
    #: When the tick started (Dagster's clock, epoch seconds).
    timestamp: float
    #: The first line of the error of a failed tick (None otherwise).
    error: str | None


def latest_sensor_tick(instance: dg.DagsterInstance, state: StoredSensorState) -> SensorTick | None:
    """The latest tick of one stored sensor state, None if it never ticked."""
    ticks = instance.get_ticks(state.origin_id, state.selector_id, limit=1)
    if not ticks:
        return None
    tick = ticks[0]
    error = None
    if tick.status == TickStatus.FAILURE and tick.error is not None:
        message = (tick.error.message or "").strip()
        error = message.splitlines()[0] if message else "unknown error"
    return SensorTick(status=tick.status.value.lower(), timestamp=float(tick.timestamp), error=error)


def time_partition_key_for(
    partitions_def: dg.TimeWindowPartitionsDefinition, instant: datetime
) -> str | None:
    """The key of the time-window partition that contains `instant`, or None when no partition does.

    `get_partition_key_for_timestamp` is a method of a public class but not documented as public API; the
    window it returns is checked against the definition's own keys (`has_partition_key`, public) because it
    happily names a window before the start or after the end.
    """
    key = partitions_def.get_partition_key_for_timestamp(instant.timestamp())
    if not partitions_def.has_partition_key(key):
        return None
    window = partitions_def.time_window_for_partition_key(key)
    return key if window.start <= instant < window.end else None
