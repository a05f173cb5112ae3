"""Which Airflow instances a definitions module peered, for commands such as `airpeer clean`.

`build_defs_from_airflow_instance` registers each instance it peers when the module is imported; the clean
command imports the user's definitions file and reads this registry, so it uses exactly the user's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg

from .airflow.instance import AirflowInstance
from .airflow.models import Dag


@dataclass(frozen=True)
class PeeredInstance:
    """One Airflow instance peered by a definitions module."""

    instance: AirflowInstance
    asset_keys_by_dag_id: Mapping[str, dg.AssetKey]
    sensor_name: str
    #: Further assets whose history this peering records for a DAG (the observe stage's mapped assets, such as
    #: the dbt models a DAG builds). Empty in the peer stage.
    mapped_asset_keys_by_dag_id: Mapping[str, Sequence[dg.AssetKey]] = field(default_factory=dict)
    #: The sensor's settings and DAG selection, for `airpeer doctor` (lag against the late-commit window).
    late_commit_window: timedelta = timedelta(minutes=5)
    sensor_minimum_interval_seconds: int = 30
    dag_selector_fn: Callable[[Dag], bool] | None = None

    def owned_asset_keys(self, dag_ids: Iterable[str]) -> dict[str, tuple[dg.AssetKey, ...]]:
        """The assets whose Dagster history this peering records, per DAG: exactly what `airpeer clean` wipes.

        The one place that decides ownership: a key that is not listed here is never wiped.
        """
        return {
            dag_id: (self.asset_keys_by_dag_id[dag_id], *self.mapped_asset_keys_by_dag_id.get(dag_id, ()))
            for dag_id in dag_ids
        }


_PEERED: dict[str, PeeredInstance] = {}


def register(peered: PeeredInstance) -> None:
    # Keyed by instance name: re-importing a module replaces its entry instead of adding a twin.
    _PEERED[peered.instance.name] = peered


def peered_instances() -> list[PeeredInstance]:
    """Instances registered so far in this process, in registration order."""
    return list(_PEERED.values())


def clear_registry() -> None:
    _PEERED.clear()
