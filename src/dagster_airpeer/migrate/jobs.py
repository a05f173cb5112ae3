"""`proxy_jobs`: one Dagster asset job per Airflow task with executable mapped assets."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import dagster as dg

from ..in_airflow.naming import (
    DAG_ID_TAG,
    INSTANCE_TAG,
    PARTITION_FMT_TAG,
    PARTITION_TIMEZONE_TAG,
    TASK_ID_TAG,
    proxy_job_name,
)
from ..observe.events import TASK_STATUS_CHECK_NAME
from ..observe.index import ObservedMappings

log = logging.getLogger(__name__)


def _executable_assets(defs: dg.Definitions | None) -> dict[dg.AssetKey, dg.AssetsDefinition]:
    found: dict[dg.AssetKey, dg.AssetsDefinition] = {}
    for item in (defs.assets or []) if defs is not None else []:
        if isinstance(item, dg.AssetsDefinition) and item.is_executable:
            for key in item.keys:
                found[key] = item
    return found


def _check_keys(defs: dg.Definitions | None, keys: Iterable[dg.AssetKey]) -> list[dg.AssetCheckKey]:
    """The checks of `defs` on `keys`, embedded (a dbt test) or standalone, except `airflow_task_status`.

    Listed by key rather than subtracted from the assets' selection: a subtracted check that no definition
    supplies fails the job's resolution, and the status checks are added to the code location elsewhere.
    """
    wanted = set(keys)
    found: set[dg.AssetCheckKey] = set()
    for item in [*(defs.assets or []), *(defs.asset_checks or [])] if defs is not None else []:
        if isinstance(item, dg.AssetsDefinition):
            found.update(
                ck for ck in item.check_keys if ck.asset_key in wanted and ck.name != TASK_STATUS_CHECK_NAME
            )
    return sorted(found, key=str)


def _partition_tags(
    keys: Iterable[dg.AssetKey], assets: dict[dg.AssetKey, dg.AssetsDefinition]
) -> dict[str, str]:
    for key in keys:
        partitions = assets[key].specs_by_key[key].partitions_def
        if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            # The proxy formats the Airflow logical date with these to name the run's partition.
            return {PARTITION_FMT_TAG: partitions.fmt, PARTITION_TIMEZONE_TAG: partitions.timezone}
    return {}


def proxy_jobs(
    mappings: ObservedMappings, defs: dg.Definitions | None
) -> list[dg.UnresolvedAssetJobDefinition]:
    """The job a proxied task of `mappings`' Airflow instance launches, for each task-mapped Airflow task.

    A job selects the task's mapped assets that `defs` makes executable (an `AssetSpec` alone only observes
    what Airflow did) with their asset checks, except airpeer's `airflow_task_status`, which reports Airflow's
    state and has nothing to run. A task with no executable mapped asset gets no job: its proxy fails with
    "no code location defines job ..." until the assets are given code.
    """
    assets = _executable_assets(defs)
    jobs = []
    for (dag_id, task_id), keys in sorted(mappings.keys_by_task.items()):
        runnable = [key for key in keys if key in assets]
        if not runnable:
            continue
        if len(runnable) < len(keys):
            log.warning(
                "Task %s of DAG %s: mapped assets %s have no code; its proxy job materializes only %s",
                task_id,
                dag_id,
                ", ".join(k.to_user_string() for k in keys if k not in assets),
                ", ".join(k.to_user_string() for k in runnable),
            )
        checks = _check_keys(defs, runnable)
        jobs.append(
            dg.define_asset_job(
                name=proxy_job_name(mappings.instance_name, dag_id, task_id),
                selection=dg.AssetSelection.assets(*runnable).without_checks()
                | dg.AssetSelection.checks(*checks),
                description=f"Materializes the assets of Airflow task {task_id!r} of DAG {dag_id!r} "
                f"(instance {mappings.instance_name!r}) when the task is proxied to Dagster.",
                tags={
                    INSTANCE_TAG: mappings.instance_name,
                    DAG_ID_TAG: dag_id,
                    TASK_ID_TAG: task_id,
                    **_partition_tags(runnable, assets),
                },
            )
        )
    return jobs
