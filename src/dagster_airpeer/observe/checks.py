"""The `airflow_task_status` check on every task-mapped asset (reported by the sensor, see observe/events.py)."""

# No `from __future__ import annotations`: Dagster validates the `context` annotation of check functions as an
# object, and postponed annotations turn it into a string.
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from ..airflow.instance import AirflowInstance
from .events import TASK_STATUS_CHECK_NAME, task_metadata
from .index import ObservedMappings

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def task_status_checks(
    instance: AirflowInstance, mappings: ObservedMappings, keys: Sequence[dg.AssetKey]
) -> dg.AssetChecksDefinition:
    """One `airflow_task_status` check per task-mapped asset of `instance`.

    The sensor reports it: failing when a task mapped to the asset finally fails, passing again with its next
    success. Executed from Dagster, it reports the state of the task in the DAG's latest finished run.
    """
    tasks_of_key: dict[dg.AssetKey, list[tuple[str, str]]] = {}
    for (dag_id, task_id), mapped in sorted(mappings.keys_by_task.items()):
        for key in mapped:
            tasks_of_key.setdefault(key, []).append((dag_id, task_id))
    specs = [
        dg.AssetCheckSpec(
            name=TASK_STATUS_CHECK_NAME,
            asset=key,
            description="Whether the Airflow task that builds this asset last succeeded. Reported by the airpeer "
            "sensor as tasks end; executing it asks Airflow about the DAG's latest finished run.",
        )
        for key in keys
    ]

    @dg.multi_asset_check(name=f"{instance.name}__airflow_task_status", specs=specs, can_subset=True)
    def _airflow_task_status(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            failed: list[str] = []
            seen: list[str] = []
            metadata: dict[str, Any] = {}
            for dag_id, task_id in tasks_of_key.get(check_key.asset_key, []):
                page = instance.list_finished_runs(
                    end_date_gte=_EPOCH, order_by="-end_date", limit=1, dag_ids=[dag_id]
                )
                if not page.runs:
                    continue
                run = page.runs[0]
                for ti in instance.list_task_instances(dag_id, run.run_id):
                    if ti.task_id != task_id:
                        continue
                    seen.append(f"{dag_id}.{task_id} [{ti.map_index}]: {ti.state}")
                    metadata = task_metadata(
                        ti, webserver_url=instance.webserver_url, api_version=instance.api_version
                    )
                    if ti.state != "success":
                        failed.append(seen[-1])
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=TASK_STATUS_CHECK_NAME,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=(
                    "In the latest finished runs: " + "; ".join(seen)
                    if seen
                    else "No mapped task has run in Airflow yet."
                ),
                metadata=metadata,
            )

    return _airflow_task_status
