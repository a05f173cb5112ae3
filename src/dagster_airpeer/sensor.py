"""The polling sensor: turns Airflow DAG runs that ended into Dagster asset events, exactly once."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from ._dagster_compat import (
    latest_check_evaluations,
    latest_runless_storage_id,
    repository_check_keys,
    runless_asset_records_after,
    runless_asset_records_since,
    sensor_evaluation_timeout_seconds,
)
from .airflow.errors import AirflowError, AirflowNotFoundError
from .airflow.instance import AirflowInstance
from .airflow.models import Dag, DagRun
from .events import RUN_STATUS_CHECK_NAME, AssetEvent, completion_id, event_completion_id, events_for_run
from .feed import CompletionFeed, CursorError, FeedState, TaskCompletionFeed, load_cursor_json
from .migrate import ProxiedRuns
from .observe.airflow_assets import poll_airflow_asset_events
from .observe.events import TASK_STATUS_CHECK_NAME, TaskEvents
from .observe.index import ObservedMappings

#: Checks that the sensor reports itself (never run by the checks job).
_REPORTED_CHECKS = frozenset({RUN_STATUS_CHECK_NAME, TASK_STATUS_CHECK_NAME})
#: The share of a tick's budget the run feed may use when the task feed runs after it.
_RUN_SHARE = 0.5
#: The task feed gets at least this many seconds of a tick, whatever the run feed used.
_MIN_TASK_BUDGET = 1.0

#: Seconds of Dagster's sensor timeout kept free after the hard deadline: building the tick's events, the
#: event log check for a crashed tick's events, serialising the result.
DEADLINE_MARGIN = 15.0
#: Seconds a page in flight (and its retries) may take once the soft budget is spent...
IN_FLIGHT = 30.0
#: ...and never less than this, or the largest budget would leave no time to finish a page.
MIN_IN_FLIGHT = 5.0
#: The smallest sensor timeout airpeer can work within.
MIN_SENSOR_TIMEOUT = DEADLINE_MARGIN + MIN_IN_FLIGHT + 1.0
#: Seconds the late-commit window must exceed the hard deadline by (commit delay, skew between Airflow hosts).
COMMIT_MARGIN = 15.0


@dataclass(frozen=True)
class SensorSettings:
    """How the sensor polls. The defaults suit an instance with up to thousands of DAGs."""

    minimum_interval_seconds: int = 30
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING
    #: History imported by the sensor's first tick. One day shows recent activity at once without
    #: flooding Dagster with an instance's whole past; raise it to import more.
    lookback: timedelta = timedelta(days=1)
    #: How long after its end date a run may still appear in Airflow (commit delay, skew between Airflow hosts).
    late_commit_window: timedelta = timedelta(minutes=5)
    #: A tick stops reading new pages after this many seconds and resumes at the next tick.
    tick_time_budget_seconds: float = 8.0
    #: ...or after this many completed runs, which bounds the events Dagster stores in one tick.
    max_runs_per_tick: int = 5000
    #: Requests in flight at once while a tick has several pages to read.
    max_parallel_requests: int = 4
    #: Dagster's sensor evaluation timeout in force (`DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS`, default 60 s): a
    #: tick that takes longer is abandoned by Dagster with its cursor, so the hard deadline stays under it.
    sensor_timeout_seconds: float = field(default_factory=sensor_evaluation_timeout_seconds)

    def __post_init__(self) -> None:
        # Types first: a setting read from an environment variable arrives as a string, and comparing it
        # would fail with an error that names neither the setting nor what it should be.
        for name, value, kind, expected in (
            (
                "sensor_minimum_interval_seconds",
                self.minimum_interval_seconds,
                int,
                "a whole number of seconds",
            ),
            ("lookback", self.lookback, timedelta, "a datetime.timedelta"),
            ("late_commit_window", self.late_commit_window, timedelta, "a datetime.timedelta"),
            ("tick_time_budget_seconds", self.tick_time_budget_seconds, (int, float), "a number of seconds"),
            ("max_runs_per_tick", self.max_runs_per_tick, int, "a whole number"),
            ("max_parallel_requests", self.max_parallel_requests, int, "a whole number"),
        ):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
        if self.minimum_interval_seconds < 1:
            raise ValueError(
                f"sensor_minimum_interval_seconds must be >= 1, got {self.minimum_interval_seconds}"
            )
        if self.lookback < timedelta(0):
            raise ValueError(f"lookback must be a non-negative timedelta, got {self.lookback!r}")
        timeout = self.sensor_timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < MIN_SENSOR_TIMEOUT:
            raise ValueError(
                f"Dagster's sensor evaluation timeout (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS) is {timeout!r} s; "
                f"airpeer needs at least {MIN_SENSOR_TIMEOUT:g} s to read a page and store a tick"
            )
        if not 0 < self.tick_time_budget_seconds <= self.max_tick_time_budget_seconds:
            raise ValueError(
                f"tick_time_budget_seconds must be in (0, {self.max_tick_time_budget_seconds:g}]: Dagster's sensor "
                f"evaluation timeout is {timeout:g} s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS; raise it to allow a "
                f"larger budget) and a tick needs {DEADLINE_MARGIN + MIN_IN_FLIGHT:g} s of it after the budget "
                f"for the page in flight and for storing, got {self.tick_time_budget_seconds}"
            )
        minimum_window = timedelta(seconds=self.min_late_commit_window_seconds)
        if self.late_commit_window < minimum_window:
            raise ValueError(
                f"late_commit_window must be at least {minimum_window.total_seconds():g} s (the tick's hard "
                f"deadline of {self.hard_deadline_seconds:g} s plus {COMMIT_MARGIN:g} s, see docs/cursor.md), "
                f"got {self.late_commit_window!r}"
            )
        if self.max_runs_per_tick < 1:
            raise ValueError(f"max_runs_per_tick must be >= 1, got {self.max_runs_per_tick}")
        if not 1 <= self.max_parallel_requests <= 32:
            raise ValueError(f"max_parallel_requests must be in [1, 32], got {self.max_parallel_requests}")

    @property
    def max_tick_time_budget_seconds(self) -> float:
        """The largest `tick_time_budget_seconds` the sensor timeout in force allows."""
        return self.sensor_timeout_seconds - DEADLINE_MARGIN - MIN_IN_FLIGHT

    @property
    def hard_deadline_seconds(self) -> float:
        """When a tick abandons Airflow requests, in seconds from its start.

        The soft budget plus up to 30 s for the page in flight and its retries, but always `DEADLINE_MARGIN`
        short of Dagster's sensor timeout: a slow Airflow then fails the tick (or ends it after the pages
        read) in airpeer's hands, instead of Dagster abandoning the evaluation and everything it read.
        """
        return min(self.tick_time_budget_seconds + IN_FLIGHT, self.sensor_timeout_seconds - DEADLINE_MARGIN)

    @property
    def min_late_commit_window_seconds(self) -> float:
        """The shortest `late_commit_window` accepted: the hard deadline plus `COMMIT_MARGIN` (docs/cursor.md)."""
        return self.hard_deadline_seconds + COMMIT_MARGIN


class DagAssetResolver:
    """Maps a DAG id to its asset key, O(1) per run.

    DAGs that appeared in Airflow after the code location loaded are looked up once each (one request),
    filtered by the same selector and keyed by `key_of_dag`, the very function the definitions took their
    asset specs' keys from, so their runs are recorded under the key the asset will have after the next
    reload instead of being lost.
    """

    def __init__(
        self,
        instance: AirflowInstance,
        known: Mapping[str, dg.AssetKey],
        key_of_dag: Callable[[Dag], dg.AssetKey],
        dag_selector_fn: Callable[[Dag], bool] | None,
    ) -> None:
        self._instance = instance
        self._keys: dict[str, dg.AssetKey | None] = dict(known)
        self._known = frozenset(known)
        self._key_of_dag = key_of_dag
        self._selector = dag_selector_fn
        self._lock = threading.Lock()

    def is_known(self, dag_id: str) -> bool:
        return dag_id in self._known

    def key_for(self, dag_id: str) -> dg.AssetKey | None:
        try:
            return self._keys[dag_id]
        except KeyError:
            pass
        with self._lock:
            if dag_id not in self._keys:
                try:
                    dag = self._instance.get_dag(dag_id)
                except AirflowNotFoundError:
                    # Deleted since its run ended: still record the run under the default key.
                    dag = Dag(dag_id=dag_id)
                selected = self._selector is None or self._selector(dag)
                self._keys[dag_id] = self._key_of_dag(dag) if selected else None
            return self._keys[dag_id]


@dataclass
class SensorCursor:
    """The sensor's cursor: the feed's position, the run status last reported for each DAG, and how far
    Dagster's event log of runless asset events had been read.

    As JSON (`to_json` / `from_json`): the feed's keys plus `ok` and `failing` (sorted DAG ids whose last
    recorded completion succeeded / failed; a DAG in neither has no recorded run) and `stored_after`.
    """

    feed: FeedState
    #: DAG id -> whether its last recorded completion succeeded (one entry per DAG with a recorded run).
    status: dict[str, bool] = field(default_factory=dict)
    #: Storage id of the newest runless asset event when this cursor's tick ran: events stored after it may
    #: come from a tick killed before its cursor was stored (None: not known yet, the first tick).
    stored_after: int | None = None
    #: The task-instance feed's position (observe stage; None until a DAG has task mappings).
    tasks: FeedState | None = None
    #: "dag_id/task_id" of the mapped tasks whose last recorded completion failed.
    task_failing: set[str] = field(default_factory=set)
    #: The Airflow asset event feed's state (observe stage; None until it is on).
    assets: dict[str, Any] | None = None

    def to_json(self) -> str:
        doc = self.feed.to_dict()
        doc["ok"] = sorted(d for d, ok in self.status.items() if ok)
        doc["failing"] = sorted(d for d, ok in self.status.items() if not ok)
        if self.stored_after is not None:
            doc["stored_after"] = self.stored_after
        if self.tasks is not None:
            doc["tasks"] = self.tasks.to_dict()
        if self.task_failing:
            doc["task_failing"] = sorted(self.task_failing)
        if self.assets is not None:
            doc["assets"] = self.assets
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SensorCursor:
        doc = load_cursor_json(text)
        feed = FeedState.from_dict(doc)
        ok, failing = doc.get("ok", []), doc.get("failing", [])
        if not isinstance(ok, list) or not isinstance(failing, list):
            raise CursorError("the sensor cursor's 'ok'/'failing' entries are not lists")
        stored_after = doc.get("stored_after")
        if stored_after is not None and (isinstance(stored_after, bool) or not isinstance(stored_after, int)):
            raise CursorError(f"the sensor cursor's 'stored_after' is not a storage id: {stored_after!r}")
        tasks_doc = doc.get("tasks")
        task_failing = doc.get("task_failing", [])
        if not isinstance(task_failing, list):
            raise CursorError("the sensor cursor's 'task_failing' entry is not a list")
        return cls(
            feed=feed,
            status={**{str(d): True for d in ok}, **{str(d): False for d in failing}},
            stored_after=stored_after,
            tasks=FeedState.from_dict(tasks_doc) if tasks_doc is not None else None,
            task_failing={str(t) for t in task_failing},
            assets=doc["assets"] if isinstance(doc.get("assets"), dict) else None,
        )


@dataclass
class StoredCheck:
    """What the check of Dagster's event log found: completions (with the kind of event) already stored."""

    stored: set[tuple[str, str]]
    #: The storage id the next tick reads after.
    stored_after: int | None
    records: int = 0
    seconds: float = 0.0


def _event_kind(event: object) -> str:
    return "check" if isinstance(event, dg.AssetCheckEvaluation) else "materialization"


def already_stored(
    dagster: dg.DagsterInstance,
    wanted: set[str],
    after: int | None,
    since: datetime | None,
) -> StoredCheck:
    """Which of the completion ids `wanted` (a tick's, from `completion_id`) are in Dagster's event log since
    the previous cursor, as (completion id, "materialization" | "check").

    Dagster stores a tick's asset events and then its cursor; a daemon killed in between leaves events
    that the next tick, starting from the previous cursor, would produce again. They are the runless events
    stored after `after` (the newest storage id when the previous cursor's tick ran), read once (pages of
    1000), whatever the number of assets. Without `after` (the first tick), the runless events stored since
    `since` (Dagster's clock) are read instead.
    """
    started = time.monotonic()
    stored: set[tuple[str, str]] = set()
    checks: dict[dg.AssetCheckKey, set[str]] = {}
    materialized: dict[dg.AssetKey, set[str]] = {}
    newest = after
    records = 0
    if after is not None:
        scanned = runless_asset_records_after(dagster, after)
    elif since is not None:
        scanned = runless_asset_records_since(dagster, since)
    else:
        scanned = iter(())
    for record in scanned:
        records += 1
        newest = record.storage_id if newest is None else max(newest, record.storage_id)
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event is not None else None
        if isinstance(data, dg.AssetCheckEvaluation):
            found: AssetEvent = data
        elif data is not None and isinstance(getattr(data, "materialization", None), dg.AssetMaterialization):
            found = data.materialization  # type: ignore[union-attr]
        else:
            continue
        completion = event_completion_id(found)
        if completion not in wanted:
            continue
        if isinstance(found, dg.AssetCheckEvaluation):
            checks.setdefault(dg.AssetCheckKey(found.asset_key, found.check_name), set()).add(completion)
        else:
            materialized.setdefault(found.asset_key, set()).add(completion)
    # Dagster's wipe keeps raw event rows: a row found counts only while its asset's (or check's) history
    # still ends with one of the rows found (a killed tick's events are the latest of their assets until the
    # replay). One query each, only when a completion of this tick was found: none on an ordinary tick.
    if materialized:
        for asset_record in dagster.get_asset_records(sorted(materialized, key=str)):
            entry = asset_record.asset_entry
            last = entry.last_materialization
            materialization = last.asset_materialization if last is not None else None
            completions = materialized.get(entry.asset_key, set())
            if materialization is not None and event_completion_id(materialization) in completions:
                stored.update((c, "materialization") for c in completions)
    if checks:
        latest = latest_check_evaluations(dagster, sorted(checks, key=str))
        for check_key, completions in checks.items():
            evaluation = latest.get(check_key)
            if evaluation is not None and event_completion_id(evaluation) in completions:
                stored.update((c, "check") for c in completions)
    if newest is None:
        newest = latest_runless_storage_id(dagster) or 0
    return StoredCheck(stored, newest, records, time.monotonic() - started)


def _dagster_instance(context: dg.SensorEvaluationContext) -> dg.DagsterInstance | None:
    # The daemon always passes one; a context built in a test may have none, and then there is no log to read.
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


class UserChecks:
    """The user's asset checks by asset, read from the code location the sensor is evaluated in.

    Checks on a DAG asset may come from `defs=` or from another `Definitions` merged with the result later;
    only the repository Dagster built knows them all. Read once per repository (a reload builds a new one).
    Without a repository (a context built in a test) the checks found in `defs=` are used.
    """

    def __init__(self, fallback: Mapping[dg.AssetKey, Sequence[dg.AssetCheckKey]]) -> None:
        self._fallback = fallback
        self._repository: dg.RepositoryDefinition | None = None
        self._by_asset: Mapping[dg.AssetKey, Sequence[dg.AssetCheckKey]] = fallback

    def by_asset(
        self, context: dg.SensorEvaluationContext
    ) -> Mapping[dg.AssetKey, Sequence[dg.AssetCheckKey]]:
        repository = context.repository_def
        if repository is None:
            return self._fallback
        if repository is not self._repository:
            found: dict[dg.AssetKey, list[dg.AssetCheckKey]] = {}
            for check_key in sorted(repository_check_keys(repository), key=str):
                if check_key.name not in _REPORTED_CHECKS:
                    found.setdefault(check_key.asset_key, []).append(check_key)
            self._repository, self._by_asset = repository, found
        return self._by_asset


def _airflow_asset_events(
    instance: AirflowInstance,
    cursor: SensorCursor,
    settings: SensorSettings,
    started: float,
    events: list[AssetEvent],
) -> tuple[dict[str, Any] | None, str]:
    """One tick of Airflow's asset events (observe/airflow_assets.py): appends their materializations to
    `events`; returns the next state and a note for the tick's log line. A failure keeps the old state."""
    if cursor.assets is None:
        # A sensor that ran before this feed was on starts where the run feed's window starts.
        now = instance.server_time() or datetime.now(timezone.utc)
        lookback = max(timedelta(0), now - cursor.feed.watermark)
    else:
        lookback = settings.lookback
    try:
        tick = poll_airflow_asset_events(
            instance,
            cursor.assets,
            lookback=lookback,
            late_commit_window=settings.late_commit_window,
            time_budget=max(
                _MIN_TASK_BUDGET, settings.tick_time_budget_seconds - (time.monotonic() - started)
            ),
        )
    except AirflowError as exc:
        return cursor.assets, f"; Airflow asset events not read this tick, read again next tick ({exc})"
    events.extend(tick.events)
    return tick.state_doc, f"; {tick.log_line}"


def sensor_name(instance_name: str) -> str:
    return f"{instance_name}__airflow_dag_runs"


def build_dag_run_sensor(
    *,
    instance: AirflowInstance,
    resolver: DagAssetResolver,
    settings: SensorSettings,
    user_checks_by_asset: Mapping[dg.AssetKey, Sequence[dg.AssetCheckKey]],
    checks_job: dg.UnresolvedAssetJobDefinition | None,
    observed: ObservedMappings | None = None,
    partitions: Mapping[dg.AssetKey, dg.PartitionsDefinition] | None = None,
    mapped_checks_by_asset: Mapping[dg.AssetKey, Sequence[dg.AssetCheckKey]] | None = None,
    airflow_assets: bool = False,
) -> dg.SensorDefinition:
    """The sensor for one Airflow instance (see `CompletionFeed` for how exactly-once holds).

    `checks_job` selects the checks on the DAG assets and mapped assets lazily (whatever `Definitions` they
    come from); the sensor requests it with the user checks it finds on each materialized asset (see
    `UserChecks`). `observed` holds the observe stage's mappings: task instances of DAGs with task mappings
    are read by the task feed (`TaskCompletionFeed`) and recorded on their mapped assets (`TaskEvents`).
    """
    task_dag_ids = sorted(observed.task_mapped_dag_ids) if observed is not None else []
    mapped_checks = mapped_checks_by_asset or {}
    name = sensor_name(instance.name)
    user_checks = UserChecks(user_checks_by_asset)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        default_status=settings.default_status,
        job=checks_job,
        description=(
            f"Polls Airflow instance '{instance.name}' ({instance.webserver_url}) for DAG runs that ended and "
            "records each once: a materialization per successful run, a failing `airflow_run_status` check "
            "per failed run (the check passes again with the first success after a failure). Keep it running."
        ),
    )
    def _airflow_dag_runs(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        started = time.monotonic()
        checks_by_asset = user_checks.by_asset(context) if checks_job is not None else {}
        skew = timedelta(0)  # Airflow's clock minus Dagster's, measured on the first tick
        feed = CompletionFeed(
            instance,
            late_commit_window=settings.late_commit_window,
            # With task mappings the run feed leaves half the budget to the task feed, which starts after it,
            # so a tick of both stays within the budget (plus the pages in flight).
            time_budget=settings.tick_time_budget_seconds * (_RUN_SHARE if task_dag_ids else 1.0),
            max_completions=settings.max_runs_per_tick,
            parallel=settings.max_parallel_requests,
            page_size=instance.page_size,
        )
        with instance.deadline(settings.hard_deadline_seconds):
            if context.cursor:
                try:
                    cursor = SensorCursor.from_json(context.cursor)
                except CursorError as exc:
                    raise CursorError(
                        f"Sensor '{name}' cannot read its cursor ({exc}). Reset the cursor on the sensor's page "
                        f"in the Dagster UI: the next tick then imports the last {settings.lookback} of runs again "
                        "and skips those whose events are still in Dagster's event log."
                    ) from exc
            else:
                # The first request also tells us Airflow's clock, which the lookback is measured on.
                api_version = instance.api_version
                now = instance.server_time() or datetime.now(timezone.utc)
                skew = now - datetime.now(timezone.utc)
                cursor = SensorCursor(feed=FeedState.initial(now, settings.lookback))
                context.log.info(
                    f"airpeer: first tick for Airflow instance '{instance.name}' (REST {api_version}); importing "
                    f"runs that ended since {cursor.feed.watermark.isoformat(timespec='seconds')}"
                )
            status = dict(cursor.status)
            task_events = (
                TaskEvents(
                    instance_name=instance.name,
                    webserver_url=instance.webserver_url,
                    api_version=instance.api_version,
                    mappings=observed,
                    partitions=partitions or {},
                    map_indexes=instance.list_mapped_task_instances,
                    failing=set(cursor.task_failing),
                    ran_in_dagster=(
                        ProxiedRuns(dagster_instance, instance.name).ran_in_dagster
                        if (dagster_instance := _dagster_instance(context)) is not None
                        else None
                    ),
                )
                if observed
                else None
            )
            events: list[AssetEvent] = []
            succeeded: dict[dg.AssetKey, list[str]] = {}
            not_peered = new_dags = 0
            earliest: list[datetime] = []  # the earliest end date recorded this tick

            def record(runs: Sequence[DagRun]) -> None:
                # Called as completions become final, while later pages are still in flight. Inside the
                # deadline too: a DAG added after the load is looked up (once, one request).
                nonlocal not_peered, new_dags
                for run in runs:
                    key = resolver.key_for(run.dag_id)
                    if key is None:
                        not_peered += 1
                        continue
                    if not resolver.is_known(run.dag_id):
                        new_dags += 1
                    # Completions come in end-date order, so this follows each DAG's status as Airflow lived it.
                    # Only a success after a recorded failure passes the check: a first success is one event.
                    recovered = run.succeeded and status.get(run.dag_id) is False
                    status[run.dag_id] = run.succeeded
                    run_url = instance.run_url(run.dag_id, run.run_id)
                    events.extend(
                        events_for_run(
                            run,
                            key,
                            run_url=run_url,
                            status_changed=recovered,
                            completion=completion_id(instance.name, run),
                        )
                    )
                    if run.end_date is not None and (not earliest or run.end_date < earliest[0]):
                        earliest[:] = [run.end_date]
                    if run.succeeded and key in checks_by_asset:
                        succeeded.setdefault(key, []).append(f"{run.dag_id}/{run.run_id}/{run.end_date}")
                    if task_events is not None:
                        task_events.add_run(run)

            result = feed.poll(cursor.feed, on_completions=record)
            tasks_state, task_note = cursor.tasks, ""
            if task_events is not None and task_dag_ids:
                # A cursor from before the DAG had task mappings starts where the run feed's window starts.
                start = (
                    cursor.tasks if cursor.tasks is not None else FeedState(watermark=cursor.feed.watermark)
                )
                task_feed = TaskCompletionFeed(
                    instance,
                    late_commit_window=settings.late_commit_window,
                    time_budget=max(
                        _MIN_TASK_BUDGET, settings.tick_time_budget_seconds - (time.monotonic() - started)
                    ),
                    max_completions=settings.max_runs_per_tick * 4,
                    parallel=settings.max_parallel_requests,
                    page_size=instance.page_size,
                )
                try:
                    task_result = task_feed.poll(
                        start, dag_ids=task_dag_ids, on_completions=task_events.add_task_instances
                    )
                except AirflowError as exc:
                    # The runs read are still recorded; the task feed keeps its position (and its status of
                    # each task) for the next tick, which reads these task instances again.
                    tasks_state = start
                    task_events.events, task_events.materialized = [], {}
                    task_events.failing = set(cursor.task_failing)
                    task_note = f"; task instances not read this tick ({exc})"
                    context.log.warning(
                        f"airpeer: task instances not read this tick, read again next tick: {exc}"
                    )
                else:
                    tasks_state = task_result.state
                    task_note = (
                        f"; {task_events.task_instances} mapped task instances ended, {task_result.pages} task "
                        f"pages, {'caught up' if task_result.caught_up else 'more to read next tick'}"
                    )
                    if task_events.proxied:
                        task_note += f", {task_events.proxied} ran in Dagster (proxied; recorded by Dagster)"
                    if task_events.waiting_map_indexes:
                        task_note += f", {task_events.waiting_map_indexes} map indexes wait for the others"
                    if task_result.interrupted is not None:
                        task_note += f" (stopped early: {task_result.interrupted})"
            assets_state, assets_note = cursor.assets, ""
            if airflow_assets:
                assets_state, assets_note = _airflow_asset_events(instance, cursor, settings, started, events)
                if assets_note.startswith("; Airflow asset events not read"):
                    context.log.warning(f"airpeer: {assets_note[2:]}")
            if task_events is not None:
                events.extend([*task_events.run_events, *task_events.events])
                for materialized in (task_events.run_materialized, task_events.materialized):
                    for key, completions in materialized.items():
                        if mapped_checks.get(key):
                            succeeded.setdefault(key, []).extend(completions)

        # Before emitting: Dagster's event log, read once, for what a tick killed after storing some of its
        # events and before its cursor left behind (docs/reliability.md). Those completions are skipped.
        dagster = _dagster_instance(context)
        stored_after = cursor.stored_after
        check_note = ""
        if dagster is not None:
            if events:
                since = None
                if cursor.stored_after is None and earliest:
                    # First tick: a killed first tick stored its events after they ended (on Dagster's clock,
                    # give or take the skew to Airflow's and between hosts).
                    since = earliest[0] - skew - settings.late_commit_window
                wanted = {c for c in map(event_completion_id, events) if c is not None}
                check = already_stored(dagster, wanted, cursor.stored_after, since)
                skipped = 0
                if check.stored:
                    kept = [e for e in events if (event_completion_id(e), _event_kind(e)) not in check.stored]
                    skipped, events = len(events) - len(kept), kept
                stored_after = check.stored_after
                check_note = (
                    f"; event log check: {check.records} records in {check.seconds:.3f} s, {skipped} events "
                    "already stored"
                )
                if skipped:
                    context.log.warning(
                        f"airpeer: {skipped} events were already in Dagster's event log (a tick stopped after "
                        "storing them and before its cursor); they are not stored again."
                    )
            else:
                latest = latest_runless_storage_id(dagster)
                stored_after = latest if latest is not None else (stored_after or 0)

        run_requests = []
        if succeeded and checks_job is not None:
            check_keys = sorted(
                {
                    ck
                    for key in succeeded
                    for ck in (mapped_checks[key] if key in mapped_checks else checks_by_asset.get(key, ()))
                },
                key=str,
            )
            # A replayed tick (Dagster stopped before storing the cursor) asks for the same run key, which
            # Dagster de-duplicates.
            digest = hashlib.sha256("\n".join(sorted(i for ids in succeeded.values() for i in ids)).encode())
            run_requests.append(
                dg.RunRequest(
                    run_key=f"airpeer-checks-{digest.hexdigest()[:32]}",
                    asset_selection=[],
                    asset_check_keys=check_keys,
                    tags={"dagster_airpeer/instance": instance.name},
                )
            )

        failed = sum(1 for run in result.completions if not run.succeeded)
        context.log.info(
            f"airpeer: {len(result.completions)} runs ended ({len(result.completions) - failed} succeeded, "
            f"{failed} failed) -> {len(events)} events, {len(run_requests)} check runs; {result.pages} pages in "
            f"{time.monotonic() - started:.2f} s; {'caught up' if result.caught_up else 'more to read next tick'}; "
            f"watermark {result.state.watermark.isoformat(timespec='seconds')}{task_note}{assets_note}{check_note}"
        )
        if task_events is not None:
            for warning in task_events.warnings:
                context.log.warning(f"airpeer: {warning}")
        if new_dags:
            context.log.warning(
                f"airpeer: {new_dags} runs belong to DAGs added to Airflow after this code location loaded; they "
                "are recorded under their assets' keys. Reload the code location to see those assets."
            )
        if not_peered:
            context.log.debug(f"airpeer: {not_peered} runs of DAGs excluded by dag_selector_fn were skipped")
        if result.interrupted is not None:
            context.log.warning(
                f"airpeer: Airflow stopped answering mid-tick ({result.interrupted}); what was read is recorded "
                "and the next tick resumes from there."
            )
        next_cursor = SensorCursor(
            feed=result.state,
            status=status,
            stored_after=stored_after,
            tasks=tasks_state,
            task_failing=task_events.failing if task_events is not None else set(cursor.task_failing),
            assets=assets_state,
        ).to_json()
        return dg.SensorResult(asset_events=events, run_requests=run_requests, cursor=next_cursor)

    return _airflow_dag_runs
