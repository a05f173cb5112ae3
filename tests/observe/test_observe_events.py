"""`TaskEvents`: the Dagster events of task instances and DAG runs for mapped assets (no Airflow needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import dagster as dg
import pytest

from dagster_airpeer.airflow.errors import AirflowConnectionError
from dagster_airpeer.airflow.instance import AirflowInstance
from dagster_airpeer.airflow.models import DagRun, RunsPage, TaskInstance, TaskInstancesPage
from dagster_airpeer.events import COMPLETION_METADATA_KEY
from dagster_airpeer.observe.events import TASK_STATUS_CHECK_NAME, TaskEvents, partitions_by_key
from dagster_airpeer.observe.index import ObservedMappings
from dagster_airpeer.sensor import DagAssetResolver, SensorCursor, SensorSettings, build_dag_run_sensor

END = datetime(2026, 3, 5, 12, tzinfo=timezone.utc)
LOGICAL = datetime(2026, 3, 5, 10, 30, tzinfo=timezone.utc)
RAW = dg.AssetKey(["warehouse", "raw"])
CLEAN = dg.AssetKey(["warehouse", "clean"])
REPORT = dg.AssetKey(["report"])
SHARDS = dg.AssetKey(["shards"])
MAPPINGS = ObservedMappings(
    instance_name="inst",
    keys_by_task={("d", "load"): (CLEAN, RAW), ("d", "fan"): (SHARDS,)},
    keys_by_dag={"d": (REPORT,)},
    task_ids_by_dag={"d": frozenset({"load", "fan"})},
    keys_of_dag={"d": (CLEAN, RAW, REPORT, SHARDS)},
)


def _ti(state: str = "success", **kwargs: Any) -> TaskInstance:
    fields: dict[str, Any] = {
        "dag_id": "d",
        "run_id": "scheduled__1",
        "task_id": "load",
        "state": state,
        "try_number": 1,
        "start_date": END - timedelta(seconds=30),
        "end_date": END,
        "logical_date": LOGICAL,
        "operator": "PythonOperator",
        "duration": 30.0,
        **kwargs,
    }
    return TaskInstance(**fields)


def _events(
    partitions: Mapping[dg.AssetKey, dg.PartitionsDefinition] | None = None,
    map_indexes: list[TaskInstance] | None = None,
    failing: set[str] | None = None,
) -> tuple[TaskEvents, list[tuple[str, str, str]]]:
    """A `TaskEvents` for instance "inst" on Airflow 3, and the map-index requests it makes."""
    asked: list[tuple[str, str, str]] = []

    def listed(dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        asked.append((dag_id, run_id, task_id))
        return list(map_indexes or [])

    events = TaskEvents(
        instance_name="inst",
        webserver_url="http://airflow.example/",
        api_version="v2",
        mappings=MAPPINGS,
        partitions=partitions or {},
        map_indexes=listed,
        failing=set(failing or ()),
    )
    return events, asked


def _materializations(events: TaskEvents) -> list[dg.AssetMaterialization]:
    return [e for e in events.events if isinstance(e, dg.AssetMaterialization)]


def _checks(events: TaskEvents) -> list[dg.AssetCheckEvaluation]:
    return [e for e in events.events if isinstance(e, dg.AssetCheckEvaluation)]


def _completion(event: dg.AssetMaterialization | dg.AssetCheckEvaluation) -> str:
    return str(event.metadata[COMPLETION_METADATA_KEY].value)


# --- success, failure, recovery ------------------------------------------------------------------------------


def test_a_success_is_one_materialization_per_mapped_key_with_the_task_metadata() -> None:
    events, asked = _events()
    events.add_task_instances([_ti()])
    found = _materializations(events)
    assert [m.asset_key for m in found] == [CLEAN, RAW]  # the mapping's (sorted) order
    assert not _checks(events) and not events.run_events and not events.warnings and not asked
    md = found[0].metadata
    assert {k: md[k].value for k in ("airflow/dag_id", "airflow/run_id", "airflow/task_id")} == {
        "airflow/dag_id": "d",
        "airflow/run_id": "scheduled__1",
        "airflow/task_id": "load",
    }
    assert md["airflow/task_state"].value == "success"
    assert md["airflow/try_number"].value == 1
    assert md["airflow/operator"].value == "PythonOperator"
    assert md["airflow/duration_seconds"].value == 30.0
    assert md["airflow/end_date"].value == END.timestamp()
    assert md["airflow/logical_date"].value == LOGICAL.timestamp()
    assert md["airflow/task_url"].value == "http://airflow.example/dags/d/tasks/load"
    assert md["airflow/run_url"].value == "http://airflow.example/dags/d/runs/scheduled__1"
    assert "airflow/map_index" not in md and "airflow/map_count" not in md
    assert found[0].partition is None
    assert events.task_instances == 1 and set(events.materialized) == {CLEAN, RAW}
    assert not events.failing


def test_each_completion_and_key_has_its_own_completion_id() -> None:
    events, _ = _events()
    # The same task instance, cleared and run again (a new try, a new end), and another run's.
    events.add_task_instances(
        [
            _ti(),
            _ti(try_number=2, end_date=END + timedelta(minutes=5)),
            _ti(run_id="scheduled__2", end_date=END + timedelta(minutes=9)),
        ]
    )
    ids = [_completion(m) for m in _materializations(events)]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(i.startswith("inst:") for i in ids)
    # Stable: the same completion read again (the next tick, a restart) gets the same ids.
    again, _ = _events()
    again.add_task_instances([_ti()])
    assert [_completion(m) for m in _materializations(again)] == ids[:2]


def test_a_final_failure_is_a_failing_check_and_no_materialization() -> None:
    events, _ = _events()
    events.add_task_instances([_ti("failed")])
    assert not _materializations(events) and not events.materialized
    checks = _checks(events)
    assert [(c.asset_key, c.check_name, c.passed) for c in checks] == [
        (CLEAN, TASK_STATUS_CHECK_NAME, False),
        (RAW, TASK_STATUS_CHECK_NAME, False),
    ]
    assert checks[0].severity == dg.AssetCheckSeverity.ERROR
    assert checks[0].metadata["airflow/task_state"].value == "failed"
    assert "failed" in (checks[0].description or "")
    assert len({_completion(c) for c in checks}) == 2
    assert events.failing == {"d/load"}


def test_the_next_success_passes_the_check_again_and_only_once() -> None:
    events, _ = _events(failing={"d/load"})
    events.add_task_instances([_ti(), _ti(run_id="scheduled__2", end_date=END + timedelta(minutes=1))])
    passed = [(c.asset_key, c.passed) for c in _checks(events)]
    assert passed == [(CLEAN, True), (RAW, True)]  # with the first success only
    assert len(_materializations(events)) == 4
    assert not events.failing
    # A failure and the success after it in one tick: a failing check, then a passing one.
    both, _ = _events()
    both.add_task_instances([_ti("failed"), _ti(try_number=2, end_date=END + timedelta(minutes=1))])
    assert [(type(e).__name__, e.asset_key) for e in both.events] == [
        ("AssetCheckEvaluation", CLEAN),
        ("AssetCheckEvaluation", RAW),
        ("AssetMaterialization", CLEAN),
        ("AssetCheckEvaluation", CLEAN),
        ("AssetMaterialization", RAW),
        ("AssetCheckEvaluation", RAW),
    ]
    assert [c.passed for c in _checks(both)] == [False, False, True, True]
    # The check evaluations of one completion differ from its materializations' ids.
    assert len({_completion(e) for e in both.events}) == 6


def test_a_task_without_mapped_assets_is_skipped() -> None:
    events, _ = _events()
    events.add_task_instances([_ti(task_id="unmapped"), _ti("failed", dag_id="other")])
    assert not events.events and events.task_instances == 0 and not events.failing


# --- dynamically mapped tasks (.expand) ----------------------------------------------------------------------


def _shards(states: tuple[str, ...] = ("success", "success", "success")) -> list[TaskInstance]:
    return [
        _ti(state, task_id="fan", map_index=i, end_date=END + timedelta(seconds=10 * i), try_number=1)
        for i, state in enumerate(states)
    ]


def test_only_the_last_map_index_to_succeed_materializes_with_the_map_count() -> None:
    shards = _shards()
    events, asked = _events(map_indexes=shards)
    events.add_task_instances(shards)
    (only,) = _materializations(events)
    assert only.asset_key == SHARDS
    assert only.metadata["airflow/map_count"].value == 3
    assert "airflow/map_index" not in only.metadata
    assert only.metadata["airflow/end_date"].value == shards[-1].end_date.timestamp()  # type: ignore[union-attr]
    assert asked == [("d", "scheduled__1", "fan")]  # one listing per task and run, not per map index
    assert events.waiting_map_indexes == 2


def test_the_last_map_index_delivered_alone_in_a_later_tick_still_emits() -> None:
    shards = _shards()
    events, _ = _events(map_indexes=shards)
    events.add_task_instances(shards[:2])
    assert not events.events
    later, _ = _events(map_indexes=shards)
    later.add_task_instances([shards[2]])
    assert [m.metadata["airflow/map_count"].value for m in _materializations(later)] == [3]


@pytest.mark.parametrize("state", ["running", "failed", "up_for_retry", "upstream_failed"])
def test_a_mapped_task_with_one_index_not_successful_emits_nothing(state: str) -> None:
    shards = _shards(("success", state, "success"))
    events, _ = _events(map_indexes=shards)
    events.add_task_instances([shards[0], shards[2]])
    assert not _materializations(events)
    assert events.waiting_map_indexes == 2


def test_a_delivered_map_index_whose_try_differs_from_the_listed_one_emits_nothing() -> None:
    # The listing shows a newer try of the last index (cleared and run again since): that try is its own
    # completion and emits when it is delivered; the delivered, older one must not emit as well.
    shards = _shards()
    listed = [*shards[:2], shards[2].model_copy(update={"try_number": 2})]
    events, _ = _events(map_indexes=listed)
    events.add_task_instances([shards[2]])
    assert not _materializations(events)
    events.add_task_instances([listed[2]])
    assert [m.metadata["airflow/map_count"].value for m in _materializations(events)] == [3]


def test_a_failed_map_index_fails_the_check() -> None:
    shards = _shards(("success", "failed", "success"))
    events, _ = _events(map_indexes=shards)
    events.add_task_instances([shards[1]])
    assert [(c.asset_key, c.passed) for c in _checks(events)] == [(SHARDS, False)]
    assert _checks(events)[0].metadata["airflow/map_index"].value == 1
    assert events.failing == {"d/fan"}


# --- partitions ----------------------------------------------------------------------------------------------

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-12-31")


def test_a_daily_partitioned_asset_gets_the_partition_of_the_logical_date() -> None:
    events, _ = _events(partitions={RAW: DAILY})
    events.add_task_instances([_ti()])
    by_key = {m.asset_key: m.partition for m in _materializations(events)}
    assert by_key == {CLEAN: None, RAW: "2026-03-05"}
    assert not events.warnings


@pytest.mark.parametrize(
    "logical", [datetime(2025, 12, 31, tzinfo=timezone.utc), datetime(2027, 1, 2, tzinfo=timezone.utc)]
)
def test_a_logical_date_outside_the_partitions_records_nothing_and_warns(logical: datetime) -> None:
    events, _ = _events(partitions={RAW: DAILY})
    events.add_task_instances([_ti(logical_date=logical)])
    assert [m.asset_key for m in _materializations(events)] == [CLEAN]
    assert list(events.materialized) == [CLEAN]
    (warning,) = events.warnings
    assert (
        "outside the partitions" in warning and "warehouse/raw" in warning and logical.isoformat() in warning
    )


def test_no_logical_date_records_nothing_on_a_partitioned_asset_and_warns() -> None:
    events, _ = _events(partitions={RAW: DAILY})
    events.add_task_instances([_ti(logical_date=None)])
    assert [m.asset_key for m in _materializations(events)] == [CLEAN]
    (warning,) = events.warnings
    assert "no logical date" in warning and "warehouse/raw" in warning


def test_partitions_that_are_not_time_windows_record_nothing_and_warn() -> None:
    events, _ = _events(partitions={RAW: dg.StaticPartitionsDefinition(["a", "b"])})
    events.add_task_instances([_ti()])
    assert [m.asset_key for m in _materializations(events)] == [CLEAN]
    (warning,) = events.warnings
    assert "StaticPartitionsDefinition" in warning and "time-window" in warning


def test_partitions_by_key_lists_the_partitioned_specs() -> None:
    defs = dg.Definitions(assets=[dg.AssetSpec(RAW, partitions_def=DAILY), dg.AssetSpec(CLEAN)])
    assert partitions_by_key(defs) == {RAW: DAILY}
    assert partitions_by_key(None) == {}


# --- assets mapped to a whole DAG ----------------------------------------------------------------------------


def _run(state: str, **kwargs: Any) -> DagRun:
    fields: dict[str, Any] = {
        "dag_id": "d",
        "run_id": "scheduled__1",
        "state": state,
        "run_type": "scheduled",
        "logical_date": LOGICAL,
        "start_date": END - timedelta(minutes=2),
        "end_date": END,
        **kwargs,
    }
    return DagRun(**fields)


def test_dag_mapped_assets_materialize_at_run_success_only() -> None:
    events, _ = _events(partitions={REPORT: DAILY})
    events.add_run(_run("failed"))
    events.add_run(_run("success", dag_id="other"))
    assert not events.run_events and not events.events
    events.add_run(_run("success"))
    (only,) = events.run_events
    assert isinstance(only, dg.AssetMaterialization)
    assert (only.asset_key, only.partition) == (REPORT, "2026-03-05")
    assert only.metadata["airflow/run_state"].value == "success"
    assert only.metadata["airflow/run_url"].value == "http://airflow.example/dags/d/runs/scheduled__1"
    assert _completion(only).startswith("inst:")
    assert not events.events and list(events.run_materialized) == [REPORT]
    # A task success never materializes a DAG-mapped asset.
    events.add_task_instances([_ti()])
    assert REPORT not in {m.asset_key for m in _materializations(events)}


def test_a_run_and_a_task_instance_of_the_same_run_have_different_completion_ids() -> None:
    events, _ = _events()
    events.add_run(_run("success"))
    events.add_run(_run("success", run_id="scheduled__2"))
    events.add_task_instances([_ti()])
    ids = [_completion(e) for e in [*events.run_events, *events.events]]
    assert len(ids) == len(set(ids)) == 4


# --- the sensor, against a fake AirflowInstance: the task feed fails on its own ------------------------------


class _FakeInstance:
    """What the sensor asks of an `AirflowInstance`, in memory; `tasks_down` makes the task listing fail."""

    name = "inst"
    webserver_url = "http://airflow.example"
    api_version = "v2"
    page_size = 100

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.runs: list[DagRun] = []
        self.tis: list[TaskInstance] = []
        self.tasks_down = False
        self.task_requests = 0

    def deadline(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def server_time(self) -> datetime:
        return self.now

    def run_url(self, dag_id: str, run_id: str) -> str:
        return f"{self.webserver_url}/dags/{dag_id}/runs/{run_id}"

    def list_finished_runs(self, *, end_date_gte: datetime, end_date_lte: datetime | None = None,
                           order_by: str = "end_date", offset: int = 0, limit: int | None = None,
                           dag_ids: Any = None) -> RunsPage:  # fmt: skip
        rows = sorted(
            (
                r
                for r in self.runs
                if r.end_date is not None
                and end_date_gte <= r.end_date
                and (end_date_lte is None or r.end_date <= end_date_lte)
                and (dag_ids is None or r.dag_id in dag_ids)
            ),
            key=lambda r: (r.end_date, r.run_id) if order_by == "end_date" else (r.run_id,),
        )
        page = rows[offset : offset + (limit or self.page_size)]
        return RunsPage(runs=tuple(page), total_entries=len(rows), server_time=self.now)

    def list_finished_task_instances(self, *, end_date_gte: datetime, end_date_lte: datetime | None = None,
                                     dag_ids: Any = None, offset: int = 0, limit: int | None = None,
                                     order_by: str | None = None) -> TaskInstancesPage:  # fmt: skip
        self.task_requests += 1
        if self.tasks_down:
            raise AirflowConnectionError("Airflow instance 'inst' did not answer (test)")
        rows = [
            t
            for t in self.tis
            if t.end_date is not None
            and end_date_gte <= t.end_date
            and (end_date_lte is None or t.end_date <= end_date_lte)
            and (dag_ids is None or t.dag_id in dag_ids)
        ]
        page = rows[offset : offset + (limit or self.page_size)]
        return TaskInstancesPage(task_instances=tuple(page), total_entries=len(rows), server_time=self.now)

    def list_mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        return []


def test_a_task_feed_outage_keeps_the_run_events_and_reads_the_task_instances_next_tick() -> None:
    fake = _FakeInstance(END + timedelta(minutes=10))
    dag_key = dg.AssetKey(["inst", "dag", "d"])
    fake.runs.append(_run("success"))
    fake.tis.append(_ti(end_date=END - timedelta(seconds=5)))
    instance = cast(AirflowInstance, fake)
    sensor = build_dag_run_sensor(
        instance=instance,
        resolver=DagAssetResolver(instance, {"d": dag_key}, lambda dag: dag_key, None),
        settings=SensorSettings(),
        user_checks_by_asset={},
        checks_job=None,
        observed=MAPPINGS,
    )

    def tick(cursor: str | None) -> tuple[list[tuple[str, dg.AssetKey]], str]:
        result = sensor(dg.build_sensor_context(cursor=cursor))
        assert isinstance(result, dg.SensorResult) and result.cursor is not None
        events = [(type(e).__name__, e.asset_key) for e in result.asset_events]
        return events, result.cursor

    fake.tasks_down = True
    first, cursor = tick(None)
    # The run's events (its DAG asset, and REPORT, mapped to the whole DAG) are kept; the task's are not built.
    assert sorted(first, key=str) == sorted(
        [("AssetMaterialization", dag_key), ("AssetMaterialization", REPORT)], key=str
    )
    assert fake.task_requests >= 1
    stored = SensorCursor.from_json(cursor)
    # The task feed stays where it started (the first tick's lookback), while the run feed moved on.
    assert stored.tasks is not None and not stored.tasks.seen
    assert stored.tasks.watermark == fake.now - SensorSettings().lookback < stored.feed.watermark

    fake.tasks_down = False
    second, cursor = tick(cursor)
    assert second == [("AssetMaterialization", CLEAN), ("AssetMaterialization", RAW)]
    third, _ = tick(cursor)
    assert third == []  # each recorded once


def test_a_proxied_task_is_not_materialized_again_but_its_check_follows_airflow() -> None:
    # Migrate: Dagster ran the task (its run is tagged with the task instance) and recorded the assets itself.
    events, _ = _events(failing={"d/load"})
    ran = {("d", "scheduled__1", "load")}
    events.ran_in_dagster = lambda ti: (ti.dag_id, ti.run_id, ti.task_id) in ran
    # The operator name is not the evidence: right after a flag flips it is the last parse's.
    events.add_task_instances([_ti(operator="PythonOperator")])
    assert not _materializations(events) and not events.materialized
    assert [(c.asset_key, c.passed) for c in _checks(events)] == [(CLEAN, True), (RAW, True)]
    assert events.proxied == 1 and not events.failing
    # Rolled back: Airflow ran the next run itself (even if its class still says proxied): recorded again.
    events.add_task_instances(
        [
            _ti(
                run_id="scheduled__2",
                end_date=END + timedelta(minutes=1),
                operator="PythonOperatorProxiedToDagster",
            )
        ]
    )
    assert len(_materializations(events)) == 2
