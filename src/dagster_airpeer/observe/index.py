"""What the sensor asks about mapped assets, answered in O(1): the `ObservedMappings` of one Airflow instance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg

from ..airflow.models import Task


@dataclass(frozen=True)
class ObservedMappings:
    """The mapped assets of one Airflow instance, indexed for the sensor.

    Built once per code location load by ``build_defs_from_airflow_instance``; every lookup is a dict access.
    Keys are sorted by their user string within each tuple, so events come out in a stable order.
    """

    instance_name: str
    #: (dag_id, task_id) -> the asset keys a success of that task materializes.
    keys_by_task: Mapping[tuple[str, str], tuple[dg.AssetKey, ...]] = field(default_factory=dict)
    #: dag_id -> the asset keys mapped to the whole DAG (materialized when a run succeeds), not the DAG's own.
    keys_by_dag: Mapping[str, tuple[dg.AssetKey, ...]] = field(default_factory=dict)
    #: dag_id -> the ids of its tasks that have mapped assets.
    task_ids_by_dag: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: (dag_id, task_id) -> the task as Airflow listed it (absent when the snapshot in use has no task list).
    tasks: Mapping[tuple[str, str], Task] = field(default_factory=dict)
    #: dag_id -> every asset key mapped to the DAG or to one of its tasks.
    keys_of_dag: Mapping[str, tuple[dg.AssetKey, ...]] = field(default_factory=dict)

    def task_asset_keys(self, dag_id: str, task_id: str) -> tuple[dg.AssetKey, ...]:
        """The assets a success of task ``task_id`` of DAG ``dag_id`` materializes (empty if none)."""
        return self.keys_by_task.get((dag_id, task_id), ())

    def dag_asset_keys(self, dag_id: str) -> tuple[dg.AssetKey, ...]:
        """The assets mapped to the whole DAG ``dag_id`` (empty if none); the DAG's own asset is not among them."""
        return self.keys_by_dag.get(dag_id, ())

    def asset_keys_of_dag(self, dag_id: str) -> tuple[dg.AssetKey, ...]:
        """Every asset mapped to DAG ``dag_id`` or to one of its tasks (empty if none)."""
        return self.keys_of_dag.get(dag_id, ())

    def mapped_task_ids(self, dag_id: str) -> frozenset[str]:
        """The tasks of ``dag_id`` that have mapped assets: the only task instances the sensor needs to read."""
        return self.task_ids_by_dag.get(dag_id, frozenset())

    def task(self, dag_id: str, task_id: str) -> Task | None:
        """The mapped task as Airflow listed it (``is_mapped`` tells a dynamically mapped ``.expand`` task)."""
        return self.tasks.get((dag_id, task_id))

    @property
    def task_mapped_dag_ids(self) -> frozenset[str]:
        """The DAGs with at least one task-mapped asset."""
        return frozenset(self.task_ids_by_dag)

    @property
    def asset_keys(self) -> frozenset[dg.AssetKey]:
        """Every mapped asset key of this instance (what `airpeer clean` may wipe besides the DAG assets)."""
        keys: set[dg.AssetKey] = set()
        for group in (*self.keys_by_task.values(), *self.keys_by_dag.values()):
            keys.update(group)
        return frozenset(keys)

    def __bool__(self) -> bool:
        return bool(self.keys_by_task or self.keys_by_dag)
