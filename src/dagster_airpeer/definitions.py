"""`build_defs_from_airflow_instance`: the one call that peers an Airflow instance with a code location."""

# No `from __future__ import annotations` here: Dagster validates the `context` annotation of check
# functions as an object, and postponed annotations turn it into a string.
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from ._names import claim_instance_name
from .airflow.assets import AirflowAsset, list_airflow_assets
from .airflow.errors import AirflowAuthError, AirflowConfigError, AirflowNotFoundError
from .airflow.instance import AirflowInstance
from .airflow.models import Dag
from .airflow.ui_urls import dag_ui_url
from .events import RUN_STATUS_CHECK_NAME, run_metadata
from .migrate import proxy_jobs
from .observe import has_mappings, observe_definitions, task_lists_for, task_mapped_dag_ids
from .observe.airflow_assets import airflow_asset_specs
from .observe.checks import task_status_checks
from .observe.events import TASK_STATUS_CHECK_NAME, partitions_by_key
from .registry import PeeredInstance, register
from .sensor import DagAssetResolver, SensorSettings, build_dag_run_sensor
from .snapshot import AirflowSnapshot, default_snapshot_dir, load_snapshot
from .translator import DagsterAirflowTranslator

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _run_status_checks(
    instance: AirflowInstance, keys_by_dag_id: Mapping[str, dg.AssetKey]
) -> dg.AssetChecksDefinition:
    dag_id_of_key = {key: dag_id for dag_id, key in keys_by_dag_id.items()}
    specs = [
        dg.AssetCheckSpec(
            name=RUN_STATUS_CHECK_NAME,
            asset=key,
            description="Whether the DAG's latest Airflow run succeeded. Reported by the airpeer sensor when "
            "runs end; executing it from Dagster asks Airflow for the latest finished run.",
        )
        for key in keys_by_dag_id.values()
    ]

    @dg.multi_asset_check(name=f"{instance.name}__airflow_run_status", specs=specs, can_subset=True)
    def _airflow_run_status(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        # Executed from Dagster ("Execute all" on the checks tab, say): report Airflow's truth rather than
        # fail, so the check's status keeps meaning "the latest Airflow run succeeded".
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            dag_id = dag_id_of_key[check_key.asset_key]
            page = instance.list_finished_runs(
                end_date_gte=_EPOCH, order_by="-end_date", limit=1, dag_ids=[dag_id]
            )
            if not page.runs:
                yield dg.AssetCheckResult(
                    asset_key=check_key.asset_key,
                    check_name=RUN_STATUS_CHECK_NAME,
                    passed=True,
                    description=f"No run of DAG {dag_id} has ended in Airflow yet.",
                    metadata={"airflow/dag_id": dag_id},
                )
                continue
            run = page.runs[0]
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=RUN_STATUS_CHECK_NAME,
                passed=run.succeeded,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"Latest Airflow run {run.run_id} ended in state '{run.state}'.",
                metadata=run_metadata(run, instance.run_url(run.dag_id, run.run_id)),
            )

    return _airflow_run_status


def _user_checks_by_asset(
    defs: dg.Definitions | None, dag_keys: set[dg.AssetKey]
) -> dict[dg.AssetKey, tuple[dg.AssetCheckKey, ...]]:
    found: dict[dg.AssetKey, list[dg.AssetCheckKey]] = {}
    for checks_def in (defs.asset_checks or []) if defs is not None else []:
        if not isinstance(checks_def, dg.AssetChecksDefinition):
            continue
        for check_key in checks_def.check_keys:
            if check_key.asset_key in dag_keys and check_key.name != RUN_STATUS_CHECK_NAME:
                found.setdefault(check_key.asset_key, []).append(check_key)
    return {key: tuple(checks) for key, checks in found.items()}


def _spec_of_dag(
    snapshot: AirflowSnapshot, instance_name: str, translator: DagsterAirflowTranslator
) -> Callable[..., dg.AssetSpec]:
    """The one path from a DAG to its asset spec, for the DAGs of the load and for DAGs the sensor meets later
    (whose key must be the one their asset will have after a reload)."""

    def spec_of(dag: Dag, source: str | None = None) -> dg.AssetSpec:
        return translator.get_asset_spec(
            instance_name,
            dag,
            dag_url=dag_ui_url(snapshot.webserver_url, snapshot.api_version, dag.dag_id),
            source=source,
        )

    return spec_of


def _asset_specs(
    snapshot: AirflowSnapshot,
    dags: Sequence[Dag],
    instance_name: str,
    spec_of: Callable[..., dg.AssetSpec],
) -> tuple[list[dg.AssetSpec], dict[str, dg.AssetKey]]:
    specs: list[dg.AssetSpec] = []
    keys: dict[str, dg.AssetKey] = {}
    owners_of_key: dict[dg.AssetKey, str] = {}
    for dag in dags:
        spec = spec_of(dag, snapshot.sources.get(dag.dag_id))
        clash = owners_of_key.get(spec.key)
        if clash is not None:
            raise AirflowConfigError(
                f"DAGs '{clash}' and '{dag.dag_id}' of Airflow instance '{instance_name}' map to the same asset "
                f"key {spec.key.to_user_string()!r}; make the translator's get_asset_key() tell them apart."
            )
        owners_of_key[spec.key] = dag.dag_id
        specs.append(spec)
        keys[dag.dag_id] = spec.key
    return specs, keys


def _airflow_assets_for(instance: AirflowInstance) -> Callable[[], list[AirflowAsset]]:
    """The snapshot's `assets_for` hook: Airflow's assets, or none (with a warning) where the login may not
    list them, so that a user without that permission still gets the DAGs."""

    def assets_for() -> list[AirflowAsset]:
        try:
            return list_airflow_assets(instance)
        except (AirflowNotFoundError, AirflowAuthError) as exc:
            dg.get_dagster_logger().warning(
                f"airpeer: Airflow instance '{instance.name}' did not list its assets ({exc}); they are not shown. "
                "Give the login read access to assets (datasets on Airflow 2), or pass observe_airflow_assets=False."
            )
            return []

    return assets_for


def build_defs_from_airflow_instance(
    *,
    airflow_instance: AirflowInstance,
    defs: dg.Definitions | None = None,
    dag_selector_fn: Callable[[Dag], bool] | None = None,
    translator: DagsterAirflowTranslator | None = None,
    sensor_minimum_interval_seconds: int = 30,
    default_sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    lookback: timedelta = timedelta(days=1),
    late_commit_window: timedelta = timedelta(minutes=5),
    tick_time_budget_seconds: float = 8.0,
    max_runs_per_tick: int = 5000,
    max_parallel_requests: int = 4,
    show_dag_source: bool = False,
    snapshot_dir: str | Path | None = None,
    observe_airflow_assets: bool | None = None,
) -> dg.Definitions:
    """Peer an Airflow instance: one external asset per DAG and a sensor that records every run that ends.

    Args:
        airflow_instance: the Airflow instance to peer (Airflow 2 or 3; the version is detected).
        defs: your own definitions (asset checks on the DAG assets, other assets), merged into the result.
            Checks on a DAG's asset run after each new materialization of that asset, also when they come
            from another `Definitions` merged with the result.
        dag_selector_fn: keep only the DAGs for which this returns True.
        translator: customises the asset specs (key, description, tags, metadata, owners, group).
        sensor_minimum_interval_seconds: how often the sensor polls Airflow.
        default_sensor_status: RUNNING by default: peering only works while the sensor runs.
        lookback: how much history the sensor's first tick imports (default: one day).
        late_commit_window: how long after its end a run may still appear in Airflow (default 5 minutes); at
            least the tick's hard deadline plus 15 s (docs/cursor.md).
        tick_time_budget_seconds: a tick stops reading after this long and resumes at the next tick; at most
            Dagster's sensor evaluation timeout (`DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS`, 60 s) minus 20 s. The
            tick's hard deadline is the budget plus 30 s, capped 15 s short of that timeout.
        max_runs_per_tick: a tick stops after this many completed runs.
        max_parallel_requests: at most this many requests a tick sends to Airflow at once when it has several
            pages to read (1: one after the other). Keep it at or below the number of Airflow webserver /
            api-server workers.
        show_dag_source: show each DAG's Python source on its asset (cached between loads).
        snapshot_dir: where the last good snapshot of Airflow is kept for loading while Airflow is down
            (default ``$DAGSTER_HOME/airpeer``).
        observe_airflow_assets: show Airflow's datasets (2.x) / assets (3.x) as Dagster assets, linked to the
            tasks that produce them and the DAGs scheduled on them, and record Airflow's asset events on them
            (docs/airflow-assets.md). Default: on once `defs` maps assets to this instance's tasks or DAGs (the
            observe stage), so peering alone stays as it was.

    Returns:
        Definitions with the DAG assets, their `airflow_run_status` checks, the sensor, a job running your
        checks, and your own definitions.
    """
    if not isinstance(airflow_instance, AirflowInstance):
        raise AirflowConfigError(
            "build_defs_from_airflow_instance(airflow_instance=...) expects a dagster_airpeer.AirflowInstance, "
            f"got {type(airflow_instance).__name__}"
        )
    # Before any request: a second instance of this name in the code location is refused (_names.py).
    claim_instance_name(airflow_instance.name)
    settings = SensorSettings(
        minimum_interval_seconds=sensor_minimum_interval_seconds,
        default_status=default_sensor_status,
        lookback=lookback,
        late_commit_window=late_commit_window,
        tick_time_budget_seconds=tick_time_budget_seconds,
        max_runs_per_tick=max_runs_per_tick,
        max_parallel_requests=max_parallel_requests,
    )
    translator = translator or DagsterAirflowTranslator()
    directory = Path(snapshot_dir) if snapshot_dir is not None else default_snapshot_dir()

    def selected(dags: Sequence[Dag]) -> list[Dag]:
        return [dag for dag in dags if dag_selector_fn is None or dag_selector_fn(dag)]

    sources_for = None
    if show_dag_source:
        from .airflow.sources import DagSourceCache

        cache = DagSourceCache(directory / f"{airflow_instance.name}.sources.json")

        def sources_for(dags: Sequence[Dag]) -> dict[str, str]:
            return cache.get_sources(airflow_instance, selected(dags))

    # Observe: task lists only for the DAGs that have task mappings; the mappings are checked and wired below.
    tasks_for = task_lists_for(airflow_instance, task_mapped_dag_ids(defs, airflow_instance.name))
    if observe_airflow_assets is None:
        observe_airflow_assets = has_mappings(defs, airflow_instance.name)
    assets_for = _airflow_assets_for(airflow_instance) if observe_airflow_assets else None
    snapshot = load_snapshot(
        airflow_instance, directory, sources_for=sources_for, tasks_for=tasks_for, assets_for=assets_for
    )
    return build_defs_from_snapshot(
        airflow_instance=airflow_instance,
        snapshot=snapshot,
        settings=settings,
        defs=defs,
        dag_selector_fn=dag_selector_fn,
        translator=translator,
        observe_airflow_assets=observe_airflow_assets,
    )


def build_defs_from_snapshot(
    *,
    airflow_instance: AirflowInstance,
    snapshot: AirflowSnapshot,
    settings: SensorSettings,
    defs: dg.Definitions | None = None,
    dag_selector_fn: Callable[[Dag], bool] | None = None,
    translator: DagsterAirflowTranslator | None = None,
    observe_airflow_assets: bool = False,
) -> dg.Definitions:
    """The definitions of `build_defs_from_airflow_instance`, built from a snapshot already in hand.

    `observe_airflow_assets`: the snapshot's Airflow assets become Dagster assets and the sensor records
    Airflow's asset events on them.

    Sends no request to Airflow: both `build_defs_from_airflow_instance` (which fetches the snapshot first) and
    `AirflowInstanceComponent` (which reads it from its Dagster defs state) build through here, so that their
    outputs are the same and a run worker loading the code location from state never calls Airflow.
    """
    translator = translator or DagsterAirflowTranslator()
    late_commit_window = settings.late_commit_window
    sensor_minimum_interval_seconds = settings.minimum_interval_seconds

    def selected(dags: Sequence[Dag]) -> list[Dag]:
        return [dag for dag in dags if dag_selector_fn is None or dag_selector_fn(dag)]

    spec_of = _spec_of_dag(snapshot, airflow_instance.name, translator)
    specs, dag_keys = _asset_specs(snapshot, selected(snapshot.dags), airflow_instance.name, spec_of)
    observed = observe_definitions(
        instance_name=airflow_instance.name, snapshot=snapshot, dag_specs=specs, dag_keys=dag_keys, defs=defs
    )
    specs, defs = observed.dag_specs, observed.defs
    airflow_asset_list: list[dg.AssetSpec] = []
    if observe_airflow_assets and snapshot.assets:
        # Airflow's assets depend on the tasks (or DAGs) producing them; the DAGs scheduled on them depend on them.
        dag_of_key = {key: dag_id for dag_id, key in dag_keys.items()}
        airflow_asset_list, updated = airflow_asset_specs(
            airflow_instance.name,
            snapshot.assets,
            dag_specs={dag_of_key[spec.key]: spec for spec in specs if spec.key in dag_of_key},
            task_assets=observed.mappings.keys_by_task,
        )
        specs = [updated.get(dag_of_key.get(spec.key, ""), spec) for spec in specs]
    user_checks = _user_checks_by_asset(defs, set(dag_keys.values()))
    # Checks on mapped assets: only standalone ones from `defs` (a dbt test embedded in a @dbt_assets
    # definition would run dbt itself, which is Airflow's job in this stage).
    task_keys = sorted({k for keys in observed.mappings.keys_by_task.values() for k in keys}, key=str)
    mapped_checks = {
        key: tuple(ck for ck in checks if ck.name != TASK_STATUS_CHECK_NAME)
        for key, checks in _user_checks_by_asset(defs, set(observed.mappings.asset_keys)).items()
    }

    checks_job = None
    if dag_keys:
        # Resolved when Dagster builds the repository, so checks on the DAG assets from a Definitions merged
        # with ours later are selected too; the sensor finds them in the repository (sensor.UserChecks).
        run_status_keys = [dg.AssetCheckKey(key, RUN_STATUS_CHECK_NAME) for key in dag_keys.values()]
        selection: dg.AssetSelection = dg.AssetSelection.checks_for_assets(
            *dag_keys.values()
        ) - dg.AssetSelection.checks(*run_status_keys)
        mapped_check_keys = [ck for checks in mapped_checks.values() for ck in checks]
        if mapped_check_keys:
            selection = selection | dg.AssetSelection.checks(*mapped_check_keys)
        checks_job = dg.define_asset_job(
            name=f"{airflow_instance.name}__dag_asset_checks",
            selection=selection,
            description="Runs the asset checks on peered Airflow DAG assets and mapped assets after each new "
            "Airflow run or task.",
        )
    sensor = build_dag_run_sensor(
        instance=airflow_instance,
        resolver=DagAssetResolver(airflow_instance, dag_keys, lambda dag: spec_of(dag).key, dag_selector_fn),
        settings=settings,
        user_checks_by_asset=user_checks,
        checks_job=checks_job,
        observed=observed.mappings,
        partitions=partitions_by_key(defs),
        mapped_checks_by_asset=mapped_checks,
        airflow_assets=observe_airflow_assets,
    )
    register(
        PeeredInstance(
            instance=airflow_instance,
            asset_keys_by_dag_id=dag_keys,
            mapped_asset_keys_by_dag_id=observed.mappings.keys_of_dag,
            sensor_name=sensor.name,
            late_commit_window=late_commit_window,
            sensor_minimum_interval_seconds=sensor_minimum_interval_seconds,
            dag_selector_fn=dag_selector_fn,
        )
    )
    peered = dg.Definitions(
        assets=[*specs, *airflow_asset_list],
        asset_checks=[
            *([_run_status_checks(airflow_instance, dag_keys)] if dag_keys else []),
            *([task_status_checks(airflow_instance, observed.mappings, task_keys)] if task_keys else []),
        ],
        sensors=[sensor],
        # Migrate: one job per task-mapped Airflow task, which a proxied task launches by name.
        jobs=[*([checks_job] if checks_job is not None else []), *proxy_jobs(observed.mappings, defs)],
    )
    return dg.Definitions.merge(peered, defs) if defs is not None else peered
