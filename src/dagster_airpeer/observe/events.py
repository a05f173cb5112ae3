"""The Dagster events of the observe stage: what a task instance that ended means for its mapped assets.

* A success materializes each asset mapped to its task, at once (its DAG run may still be running, and may
  fail later).
* A final failure is a failing ``airflow_task_status`` check on each of them (never a materialization); the
  next success passes it again.
* A dynamically mapped task (``.expand``) materializes its assets once per run, when its last map index
  succeeds, with the number of map indexes.
* A partitioned asset gets the time-window partition that contains the run's logical date.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg

from .._dagster_compat import time_partition_key_for
from ..airflow.models import DagRun, TaskInstance
from ..airflow.ui_urls import run_ui_url, task_ui_url
from ..events import COMPLETION_METADATA_KEY, AssetEvent, run_metadata
from ..feed.tasks import task_instance_digest
from .index import ObservedMappings

#: The built-in check on every task-mapped asset: fails when its task finally fails in Airflow.
TASK_STATUS_CHECK_NAME = "airflow_task_status"


def event_completion(instance_name: str, completion: str, key: dg.AssetKey) -> str:
    """The completion id of one event: one completion (a task instance or run) for one asset."""
    digest = hashlib.blake2b(f"{completion}\n{key.to_user_string()}".encode(), digest_size=9).hexdigest()
    return f"{instance_name}:{digest}"


def partitions_by_key(defs: dg.Definitions | None) -> dict[dg.AssetKey, dg.PartitionsDefinition]:
    """The partitions definition of each asset of `defs` that has one."""
    found: dict[dg.AssetKey, dg.PartitionsDefinition] = {}
    for item in (defs.assets or []) if defs is not None else []:
        specs: Iterable[dg.AssetSpec] = (
            [item]
            if isinstance(item, dg.AssetSpec)
            else item.specs
            if isinstance(item, dg.AssetsDefinition)
            else []
        )
        for spec in specs:
            if spec.partitions_def is not None:
                found[spec.key] = spec.partitions_def
    return found


def task_metadata(ti: TaskInstance, *, webserver_url: str, api_version: str) -> dict[str, Any]:
    """Metadata describing a task instance, shared by its materializations and check evaluations."""
    metadata: dict[str, Any] = {
        "airflow/dag_id": ti.dag_id,
        "airflow/run_id": ti.run_id,
        "airflow/task_id": ti.task_id,
        "airflow/task_state": ti.state or "unknown",
        "airflow/task_url": dg.MetadataValue.url(
            task_ui_url(webserver_url, api_version, ti.dag_id, ti.task_id)
        ),
        "airflow/run_url": dg.MetadataValue.url(run_ui_url(webserver_url, api_version, ti.dag_id, ti.run_id)),
    }
    if ti.try_number is not None:
        metadata["airflow/try_number"] = ti.try_number
    if ti.map_index >= 0:
        metadata["airflow/map_index"] = ti.map_index
    if ti.operator:
        metadata["airflow/operator"] = ti.operator
    for label, value in (
        ("airflow/logical_date", ti.logical_date),
        ("airflow/start_date", ti.start_date),
        ("airflow/end_date", ti.end_date),
    ):
        if value is not None:
            metadata[label] = dg.MetadataValue.timestamp(value)
    if ti.duration is not None:
        metadata["airflow/duration_seconds"] = ti.duration
    return metadata


@dataclass
class TaskEvents:
    """Builds the events of one tick's task instances for one Airflow instance (see the module docstring).

    `map_indexes` lists every map index of a mapped task in a run (one request per task and run, only when a
    map index succeeded). `failing` holds "dag_id/task_id" of the tasks whose last recorded completion
    failed; it is the sensor's to keep in its cursor.
    """

    instance_name: str
    webserver_url: str
    api_version: str
    mappings: ObservedMappings
    partitions: Mapping[dg.AssetKey, dg.PartitionsDefinition]
    map_indexes: Callable[[str, str, str], list[TaskInstance]]
    failing: set[str] = field(default_factory=set)
    #: Migrate: whether a task instance ran in Dagster (a proxied task; `migrate.ProxiedRuns`), whose run
    #: recorded the assets itself. None: no Dagster instance to ask (a sensor context built in a test).
    ran_in_dagster: Callable[[TaskInstance], bool] | None = None
    #: The events of task instances, and (apart, so that a task feed that fails mid-tick can drop its own
    #: events and keep these) those of DAG runs for the assets mapped to whole DAGs.
    events: list[AssetEvent] = field(default_factory=list)
    run_events: list[AssetEvent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Mapped assets materialized this tick, with what identifies each completion (for the checks run).
    materialized: dict[dg.AssetKey, list[str]] = field(default_factory=dict)
    run_materialized: dict[dg.AssetKey, list[str]] = field(default_factory=dict)
    task_instances: int = 0
    waiting_map_indexes: int = 0
    #: Successes of proxied tasks: Dagster materialized their assets in its own run.
    proxied: int = 0
    _map_cache: dict[tuple[str, str, str], list[TaskInstance]] = field(default_factory=dict)

    def add_task_instances(self, tis: Iterable[TaskInstance]) -> None:
        """The events of task instances that ended, in end-date order."""
        for ti in tis:
            keys = self.mappings.task_asset_keys(ti.dag_id, ti.task_id)
            if not keys:
                continue
            self.task_instances += 1
            handle = f"{ti.dag_id}/{ti.task_id}"
            metadata = task_metadata(ti, webserver_url=self.webserver_url, api_version=self.api_version)
            completion = (
                f"ti\n{ti.dag_id}\n{ti.run_id}\n{ti.task_id}\n{ti.map_index}\n{task_instance_digest(ti)}"
            )
            if not ti.succeeded:
                self.failing.add(handle)
                for key in keys:
                    self.events.append(self._check(key, ti, metadata, completion, passed=False))
                continue
            if ti.map_index >= 0:
                count = self._last_of_mapped(ti)
                if count is None:
                    self.waiting_map_indexes += 1
                    continue
                metadata["airflow/map_count"] = count
                metadata.pop("airflow/map_index", None)
            recovered = handle in self.failing
            self.failing.discard(handle)
            if self.ran_in_dagster is not None and self.ran_in_dagster(ti):
                # Migrate: the task ran in Dagster, which recorded its assets (and their checks) itself; a
                # second materialization would double them. Its status check still follows Airflow.
                self.proxied += 1
                if recovered:
                    for key in keys:
                        self.events.append(self._check(key, ti, metadata, completion, passed=True))
                continue
            description = f"Airflow task {ti.task_id} of DAG {ti.dag_id} succeeded in run {ti.run_id}."
            for key in keys:
                event = self._materialization(
                    key,
                    ti.logical_date,
                    f"task {handle} of run {ti.run_id}",
                    description,
                    metadata,
                    completion,
                )
                if event is None:
                    continue
                self.events.append(event)
                self.materialized.setdefault(key, []).append(completion)
                if recovered:
                    self.events.append(self._check(key, ti, metadata, completion, passed=True))

    def add_run(self, run: DagRun) -> None:
        """The events of a DAG run that ended, for the assets mapped to the whole DAG (at its success)."""
        keys = self.mappings.dag_asset_keys(run.dag_id)
        if not keys or not run.succeeded:
            return
        metadata = run_metadata(run, run_ui_url(self.webserver_url, self.api_version, run.dag_id, run.run_id))
        end = run.end_date.isoformat() if run.end_date is not None else ""
        completion = f"run\n{run.dag_id}\n{run.run_id}\n{end}"
        for key in keys:
            event = self._materialization(
                key,
                run.logical_date,
                f"run {run.run_id} of DAG {run.dag_id}",
                f"Airflow DAG run {run.run_id} succeeded.",
                metadata,
                completion,
            )
            if event is not None:
                self.run_events.append(event)
                self.run_materialized.setdefault(key, []).append(completion)

    def _materialization(
        self,
        key: dg.AssetKey,
        logical_date: datetime | None,
        what: str,
        description: str,
        metadata: dict[str, Any],
        completion: str,
    ) -> dg.AssetMaterialization | None:
        """One completion's materialization of `key` (None: a partitioned asset no partition of fits)."""
        record, partition = self._partition(key, logical_date, what)
        if not record:
            return None
        return dg.AssetMaterialization(
            asset_key=key,
            partition=partition,
            description=description,
            metadata={
                **metadata,
                COMPLETION_METADATA_KEY: event_completion(self.instance_name, completion, key),
            },
        )

    def _check(
        self, key: dg.AssetKey, ti: TaskInstance, metadata: dict[str, Any], completion: str, *, passed: bool
    ) -> dg.AssetCheckEvaluation:
        return dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=TASK_STATUS_CHECK_NAME,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"Airflow task {ti.task_id} of DAG {ti.dag_id} ended in state '{ti.state}' in run {ti.run_id}.",
            metadata={
                **metadata,
                COMPLETION_METADATA_KEY: event_completion(self.instance_name, f"check\n{completion}", key),
            },
        )

    def _last_of_mapped(self, ti: TaskInstance) -> int | None:
        """The number of map indexes when `ti` is the last of its task's map indexes to succeed (and all did),
        else None. Each map index's completion comes once, so exactly one of them is the last."""
        group = (ti.dag_id, ti.run_id, ti.task_id)
        if group not in self._map_cache:
            self._map_cache[group] = self.map_indexes(*group)
        indexes = self._map_cache[group]
        if not indexes or any(other.state != "success" or other.end_date is None for other in indexes):
            return None
        last = max(indexes, key=lambda other: (other.end_date, other.map_index))
        if (last.map_index, last.try_number, last.end_date) != (ti.map_index, ti.try_number, ti.end_date):
            return None
        return len(indexes)

    def _partition(
        self, key: dg.AssetKey, logical_date: datetime | None, what: str
    ) -> tuple[bool, str | None]:
        """Whether to record on `key`, and its partition key (None: not partitioned). A partitioned asset that
        no partition of it fits is not recorded, with a warning."""
        partitions_def = self.partitions.get(key)
        if partitions_def is None:
            return True, None
        if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            self.warnings.append(
                f"asset {key.to_user_string()} has {type(partitions_def).__name__}; airpeer records only "
                f"time-window partitions from Airflow's logical date, so {what} is not recorded on it"
            )
            return False, None
        if logical_date is None:
            self.warnings.append(
                f"{what} has no logical date (a manual run on Airflow 3); partitioned asset "
                f"{key.to_user_string()} is not recorded for it"
            )
            return False, None
        partition = time_partition_key_for(partitions_def, logical_date)
        if partition is None:
            self.warnings.append(
                f"the logical date {logical_date.isoformat()} of {what} is outside the partitions of asset "
                f"{key.to_user_string()}; it is not recorded"
            )
            return False, None
        return True, partition
