"""Wipe a peering so an example can be replayed: delete Airflow runs and Dagster history of peered DAGs.

Cleaning happens in two phases. `plan_clean` reads everything and validates everything (every `--dag` is peered
by some instance, every Airflow instance answers with the given credentials, every sensor cursor is readable,
no asset to wipe also holds history from Dagster runs) and deletes nothing; its plan is what the dry run prints.
`execute_clean` then deletes, in an order that keeps a concurrently ticking sensor consistent (see
`reset_sensor_status`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from . import _dagster_compat as compat
from .airflow.errors import AirflowConfigError, AirflowNotFoundError
from .events import RUN_STATUS_CHECK_NAME
from .feed import CursorError
from .location import load_location
from .observe.events import TASK_STATUS_CHECK_NAME
from .registry import PeeredInstance, SharedAsset, assets_to_wipe
from .sensor import SensorCursor

Progress = Callable[[str], None]

#: A sensor daemon whose last heartbeat is older than this is taken as not running (Dagster's own default
#: heartbeat tolerance is 300 s; the daemon beats every 30 s).
DAEMON_ALIVE_SECONDS = 120.0
#: How many times clean re-applies a cursor reset that a tick in flight overwrote before it gives up.
MAX_RESET_ROUNDS = 3


@dataclass(frozen=True)
class LoadedDefinitions:
    """What `airpeer clean` learned by importing a definitions file."""

    peered: list[PeeredInstance]
    #: Asset checks defined in the file's module-level `Definitions` (to count their results in a dry run).
    asset_check_keys: frozenset[dg.AssetCheckKey] = frozenset()


@dataclass(frozen=True)
class DagCleanPlan:
    """What cleaning one DAG of one instance would delete."""

    dag_id: str
    #: The assets whose Dagster history is wiped (`PeeredInstance.owned_asset_keys`, less `assets_kept`).
    asset_keys: tuple[dg.AssetKey, ...]
    airflow_runs: int = 0
    #: Running and queued runs left alone (without `--include-running`).
    airflow_runs_kept: int = 0
    #: Materializations, observations and check results of `asset_keys` in Dagster.
    dagster_events: int = 0
    #: Mapped assets of the DAG kept because a DAG that is not cleaned maps them too (`assets_to_wipe`).
    assets_kept: tuple[SharedAsset, ...] = ()


@dataclass(frozen=True)
class InstanceCleanPlan:
    """What cleaning one peered Airflow instance would delete."""

    peered: PeeredInstance
    dags: tuple[DagCleanPlan, ...]

    @property
    def name(self) -> str:
        return self.peered.instance.name


@dataclass(frozen=True)
class CleanReport:
    """What `clean` did for one instance."""

    instance_name: str
    dag_ids: tuple[str, ...]
    airflow_runs_deleted: int
    dagster_assets_wiped: int
    airflow_runs_kept: int = 0
    #: Stored sensor states whose cursor forgot the cleaned DAGs' last status.
    sensor_cursors_reset: int = 0
    warnings: tuple[str, ...] = field(default=())


def load_definitions(
    *, defs_file: str | Path | None = None, module_name: str | None = None
) -> LoadedDefinitions:
    """Import a definitions file or module (as `dagster dev -f` / `-m` do); return the Airflow instances it peers."""
    location = load_location(defs_file=defs_file, module_name=module_name)
    check_keys: set[dg.AssetCheckKey] = set()
    for definitions in location.definitions:
        check_keys |= set(definitions.resolve_asset_graph().asset_check_keys)
    return LoadedDefinitions(location.peered, frozenset(check_keys))


def load_definitions_file(defs_file: str | Path) -> LoadedDefinitions:
    """Import a definitions file (as `dagster dev -f` does); return the Airflow instances it peers."""
    return load_definitions(defs_file=defs_file)


def load_peered_instances(defs_file: str | Path) -> list[PeeredInstance]:
    """Import a definitions file (as `dagster dev -f` does) and return the Airflow instances it peers."""
    return load_definitions_file(defs_file).peered


def select_dags(
    peered: Sequence[PeeredInstance], dag_ids: Sequence[str] | None
) -> dict[str, tuple[str, ...]]:
    """Instance name -> the DAGs to clean there. `dag_ids=None` means every peered DAG of every instance.

    A `--dag` applies to every instance that peers it; one that no instance peers is an error.
    """
    if dag_ids is None:
        return {p.instance.name: tuple(p.asset_keys_by_dag_id) for p in peered}
    unknown = [d for d in dict.fromkeys(dag_ids) if not any(d in p.asset_keys_by_dag_id for p in peered)]
    if unknown:
        known = "; ".join(
            f"'{p.instance.name}': {', '.join(sorted(p.asset_keys_by_dag_id)) or '(none)'}" for p in peered
        )
        raise AirflowConfigError(
            f"--dag: {', '.join(map(repr, unknown))} not peered from any Airflow instance of the definitions "
            f"file; peered DAGs: {known}"
        )
    return {
        p.instance.name: tuple(d for d in dict.fromkeys(dag_ids) if d in p.asset_keys_by_dag_id)
        for p in peered
    }


def plan_clean(
    peered: Sequence[PeeredInstance],
    dagster_instance: dg.DagsterInstance | None,
    *,
    dag_ids: Sequence[str] | None = None,
    include_running: bool = False,
    airflow: bool = True,
    dagster: bool = True,
    asset_check_keys: Iterable[dg.AssetCheckKey] = (),
    progress: Progress = lambda _: None,
) -> list[InstanceCleanPlan]:
    """Read and validate everything a clean needs, delete nothing; return what `execute_clean` would delete.

    Raises `AirflowConfigError` (or the client's `AirflowError`) on the first problem, before any deletion.
    """
    selected = select_dags(peered, dag_ids)
    if dagster and dagster_instance is None:
        raise AirflowConfigError("a Dagster instance is needed to wipe asset history")
    checks_by_asset: dict[dg.AssetKey, set[dg.AssetCheckKey]] = {}
    for check in asset_check_keys:
        checks_by_asset.setdefault(check.asset_key, set()).add(check)
    to_wipe = assets_to_wipe(peered, selected)
    plans = []
    for entry in peered:
        dags = selected[entry.instance.name]
        owned = to_wipe[entry.instance.name]
        if dagster and dagster_instance is not None:
            # Unreadable cursors fail here, not after the Airflow runs are gone.
            _cursors_to_reset(dagster_instance, entry.sensor_name, dags)
        dag_plans = []
        for dag_id in dags:
            runs = deleted = kept = 0
            if airflow:
                # Also proves, before anything is deleted, that the instance answers with these credentials.
                listed = entry.instance.list_dag_runs(dag_id)
                deleted = sum(1 for run in listed if include_running or run.is_finished)
                runs, kept = deleted, len(listed) - deleted
            events = 0
            if dagster and dagster_instance is not None:
                for key in owned[dag_id].wiped:
                    checks = checks_by_asset.get(key, set()) | {
                        dg.AssetCheckKey(key, RUN_STATUS_CHECK_NAME),
                        dg.AssetCheckKey(key, TASK_STATUS_CHECK_NAME),
                    }
                    events += _count_dagster_events(dagster_instance, key, checks)
            dag_plans.append(
                DagCleanPlan(dag_id, owned[dag_id].wiped, runs, kept, events, owned[dag_id].kept)
            )
            progress(f"{entry.instance.name}: checked {dag_id}")
        plans.append(InstanceCleanPlan(entry, tuple(dag_plans)))
    return plans


def execute_clean(
    plans: Sequence[InstanceCleanPlan],
    dagster_instance: dg.DagsterInstance | None,
    *,
    include_running: bool = False,
    airflow: bool = True,
    dagster: bool = True,
    progress: Progress = lambda _: None,
    sensor_wait_timeout: float | None = None,
) -> list[CleanReport]:
    """Delete what `plan_clean` planned: the Airflow runs first, then the Dagster history and cursor statuses.

    The Airflow runs go first so that a sensor tick starting afterwards cannot see (and record) them again;
    Dagster's side is wiped once the ticks that might have read them are over.
    """
    deleted: dict[str, tuple[int, int]] = {}
    for plan in plans:
        total = kept_total = 0
        if airflow:
            for dag in plan.dags:
                n, kept = _delete_airflow_runs(plan.peered, dag.dag_id, include_running, progress)
                total, kept_total = total + n, kept_total + kept
        deleted[plan.name] = (total, kept_total)
    reports = []
    for plan in plans:
        wiped = reset = 0
        warnings: list[str] = []
        dag_ids = tuple(d.dag_id for d in plan.dags)
        if dagster and dagster_instance is not None and plan.dags:
            wait_for_ticks_in_flight(dagster_instance, plan.peered.sensor_name, progress, sensor_wait_timeout)
            keys = list(dict.fromkeys(key for dag in plan.dags for key in dag.asset_keys))
            dagster_instance.wipe_assets(keys)
            wiped = len(keys)
            progress(f"{plan.name}: wiped the Dagster history of {wiped} assets")
            for dag in plan.dags:
                for shared in dag.assets_kept:
                    warnings.append(
                        f"asset {shared.key.to_user_string()} of DAG {dag.dag_id} kept: it is also mapped to "
                        f"{', '.join(shared.unselected)}, which were not cleaned"
                    )
            reset, warning = reset_sensor_status(
                dagster_instance,
                plan.peered.sensor_name,
                dag_ids,
                progress,
                sensor_wait_timeout,
                task_dag_ids=[d.dag_id for d in plan.dags if not d.assets_kept],
            )
            warnings.extend([warning] if warning else [])
        runs, kept = deleted[plan.name]
        reports.append(CleanReport(plan.name, dag_ids, runs, wiped, kept, reset, tuple(warnings)))
    return reports


def clean_peered_instance(
    peered: PeeredInstance,
    dagster_instance: dg.DagsterInstance | None,
    *,
    dag_ids: Iterable[str] | None = None,
    include_running: bool = False,
    airflow: bool = True,
    dagster: bool = True,
    progress: Progress = lambda _: None,
) -> CleanReport:
    """Validate, then delete the runs of the peered DAGs in Airflow and wipe their assets' history in Dagster.

    Running and queued runs are kept unless `include_running`. The wiped assets are the DAG assets and the
    mapped assets of the cleaned DAGs, less those also mapped to a DAG not cleaned (`assets_to_wipe`). The
    sensor's feed positions are kept (runs and tasks that end after the clean are new completions and are
    recorded once); its last status of each cleaned DAG and its failing tasks are forgotten, so the DAG's next
    run reports `airflow_run_status` again.
    """
    plans = plan_clean(
        [peered],
        dagster_instance,
        dag_ids=None if dag_ids is None else list(dag_ids),
        include_running=include_running,
        airflow=airflow,
        dagster=dagster,
        progress=progress,
    )
    options = {"include_running": include_running, "airflow": airflow, "dagster": dagster}
    return execute_clean(plans, dagster_instance, progress=progress, **options)[0]


def _delete_airflow_runs(
    peered: PeeredInstance, dag_id: str, include_running: bool, progress: Progress
) -> tuple[int, int]:
    # Listed again rather than taken from the plan: a run cleared in Airflow since is queued again and is kept.
    listed = peered.instance.list_dag_runs(dag_id)
    runs = [run for run in listed if include_running or run.is_finished]
    for index, run in enumerate(runs, start=1):
        with contextlib.suppress(AirflowNotFoundError):  # deleted meanwhile: the goal is reached
            if not run.is_finished:
                # Airflow 3 refuses to delete a running run (409): stop it first, as "Mark as failed" does.
                peered.instance.set_dag_run_state(dag_id, run.run_id, "failed")
            peered.instance.delete_dag_run(dag_id, run.run_id)
        if index % 50 == 0 or index == len(runs):
            progress(f"{peered.instance.name}: deleted {index}/{len(runs)} Airflow runs of {dag_id}")
    return len(runs), len(listed) - len(runs)


_PAGE = 1000


def _count_dagster_events(
    instance: dg.DagsterInstance, key: dg.AssetKey, check_keys: Iterable[dg.AssetCheckKey]
) -> int:
    """Materializations, observations and check results of one asset; refuses an asset that Dagster runs
    materialized, whose history is not the peering's alone."""
    count = 0
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        cursor: str | None = None
        while True:
            result = fetch(key, limit=_PAGE, cursor=cursor)
            for record in result.records:
                if record.run_id != compat.RUNLESS_RUN_ID:
                    # airpeer records DAG runs as runless events (peered assets cannot be materialized by
                    # Dagster), so a run here means another code location (a migrated dbt model, say) writes
                    # this key too: wiping would delete that history as well.
                    raise AirflowConfigError(
                        f"asset {key.to_user_string()} also has history from Dagster run {record.run_id}, "
                        "not only from Airflow: airpeer clean wipes only assets whose history the peering "
                        "alone recorded; leave its DAG out (--dag) or wipe the asset yourself"
                    )
            count += len(result.records)
            if not result.has_more:
                break
            cursor = result.cursor
    for check in check_keys:
        after: int | None = None
        while True:
            history = instance.event_log_storage.get_asset_check_execution_history(check, _PAGE, cursor=after)
            count += len(history)
            if len(history) < _PAGE:
                break
            after = history[-1].id
    return count


def _cursors_to_reset(
    instance: dg.DagsterInstance,
    sensor_name: str,
    dag_ids: Iterable[str],
    task_dag_ids: Iterable[str] | None = None,
) -> list[tuple[compat.StoredSensorState, str]]:
    """Stored states of the sensor whose cursor holds a status of `dag_ids` or a failing task of
    `task_dag_ids` (default: `dag_ids`), with their cursor minus those."""
    wanted = set(dag_ids)
    prefixes = tuple(f"{d}/" for d in (wanted if task_dag_ids is None else set(task_dag_ids)))
    changed = []
    for state in compat.stored_sensor_states(instance, sensor_name):
        if not state.cursor:
            continue
        try:
            cursor = SensorCursor.from_json(state.cursor)
        except CursorError as exc:
            raise AirflowConfigError(
                f"the cursor of sensor '{sensor_name}' cannot be read ({exc}); reset it on the sensor's page "
                "in the Dagster UI first"
            ) from exc
        failing = {t for t in cursor.task_failing if t.startswith(prefixes)} if prefixes else set()
        if wanted & set(cursor.status) or failing:
            for dag_id in wanted:
                cursor.status.pop(dag_id, None)
            cursor.task_failing -= failing
            changed.append((state, cursor.to_json()))
    return changed


def _daemon_alive(instance: dg.DagsterInstance) -> bool:
    beat = compat.latest_sensor_daemon_heartbeat(instance)
    return beat is not None and time.time() - beat < DAEMON_ALIVE_SECONDS


def _states(instance: dg.DagsterInstance, sensor_name: str) -> Mapping[str, compat.StoredSensorState]:
    return {s.selector_id + s.origin_id: s for s in compat.stored_sensor_states(instance, sensor_name)}


def _wait(what: str, done: Callable[[], bool], timeout: float, progress: Progress) -> bool:
    deadline = time.monotonic() + timeout
    told = False
    while not done():
        if time.monotonic() > deadline:
            return False
        if not told:
            progress(f"waiting for {what} (up to {timeout:.0f} s)")
            told = True
        time.sleep(0.25)
    return True


def _default_timeout(state: compat.StoredSensorState) -> float:
    # Two sensor intervals plus Dagster's sensor evaluation timeout: by then a running daemon has ticked.
    return 2 * (state.min_interval or 30) + compat.sensor_evaluation_timeout_seconds()


def wait_for_ticks_in_flight(
    instance: dg.DagsterInstance, sensor_name: str, progress: Progress, timeout: float | None = None
) -> None:
    """Wait until the ticks of the sensor that are running now have stored their result.

    Called after the Airflow runs are deleted: such a tick may have read them before, and its events must land
    before the wipe, not after it.
    """
    if not _daemon_alive(instance):
        return
    in_flight = {
        k: s.last_started_tick
        for k, s in _states(instance, sensor_name).items()
        if s.running and s.last_started_tick and s.last_started_tick > (s.last_finished_tick or 0)
    }
    if not in_flight:
        return

    def over() -> bool:
        now = _states(instance, sensor_name)
        return all(k not in now or (now[k].last_finished_tick or 0) >= t for k, t in in_flight.items())

    wait = (
        timeout
        if timeout is not None
        else max(map(_default_timeout, _states(instance, sensor_name).values()))
    )
    if not _wait(f"the tick in flight of sensor '{sensor_name}'", over, wait, progress):
        progress(f"sensor '{sensor_name}': its tick in flight did not end within {wait:.0f} s; going on")


def reset_sensor_status(
    instance: dg.DagsterInstance,
    sensor_name: str,
    dag_ids: Sequence[str],
    progress: Progress = lambda _: None,
    timeout: float | None = None,
    *,
    task_dag_ids: Sequence[str] | None = None,
) -> tuple[int, str | None]:
    """Make the sensor's cursor forget the last status of `dag_ids` and the failing tasks of `task_dag_ids`
    (default: `dag_ids`); keep everything else (the feed positions).

    A failing task is forgotten with its assets' history, so that its next success does not pass an
    `airflow_task_status` check whose failure was wiped. `execute_clean` leaves out the DAGs with a mapped asset
    kept (`DagCleanPlan.assets_kept`): that asset's check keeps its failure, and the next success passes it.

    Returns how many stored states were rewritten and a warning if the reset could not be confirmed.

    The daemon may tick meanwhile. A tick reads the cursor when it starts and writes its new cursor (computed
    from what it read) when it ends, so a tick that read before this write puts the old statuses back. So after
    writing, when a daemon is alive and the sensor running, clean waits until a tick that started after the
    write has stored its cursor, reads the cursor again and, if a cleaned DAG has a status again, writes the
    reset again (at most `MAX_RESET_ROUNDS` times). A status back for a run that really ended after the clean
    is dropped too: that only makes the DAG's next run report `airflow_run_status` again, never miss it.
    """
    rewritten = 0
    for _ in range(MAX_RESET_ROUNDS):
        pending = _cursors_to_reset(instance, sensor_name, dag_ids, task_dag_ids)
        if not pending:
            return rewritten, None
        for state, cursor in pending:
            compat.set_stored_sensor_cursor(instance, state, cursor)
        rewritten = max(rewritten, len(pending))
        progress(f"sensor '{sensor_name}': forgot the last status of {len(dag_ids)} DAGs in its cursor")
        states = {k: s for k, s in _states(instance, sensor_name).items() if s.running}
        if not states or not _daemon_alive(instance):
            return rewritten, None  # nothing ticks, so nothing can overwrite the reset
        # Ticks are timed on Dagster's clock: compare with what the state says, not with this machine's clock.
        marks = {k: max(s.last_started_tick or 0, s.last_finished_tick or 0) for k, s in states.items()}

        def fresh_tick_done(marks: Mapping[str, float] = marks) -> bool:
            now = _states(instance, sensor_name)
            return all(k not in now or (now[k].last_finished_tick or 0) > m for k, m in marks.items())

        wait = timeout if timeout is not None else max(map(_default_timeout, states.values()))
        if not _wait(f"the next tick of sensor '{sensor_name}'", fresh_tick_done, wait, progress):
            return rewritten, (
                f"sensor '{sensor_name}' did not tick within {wait:.0f} s after its cursor was reset; if a tick "
                "was in flight it may have put a cleaned DAG's last status back: run the same clean again"
            )
    if _cursors_to_reset(instance, sensor_name, dag_ids, task_dag_ids):
        return rewritten, (
            f"sensor '{sensor_name}': its ticks kept putting a cleaned DAG's last status back; run the same "
            "clean again"
        )
    return rewritten, None
