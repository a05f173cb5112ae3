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
    #: the dbt models a DAG builds: `ObservedMappings.keys_of_dag`). Empty in the peer stage. An asset may be
    #: mapped to several DAGs (see `assets_to_wipe`).
    mapped_asset_keys_by_dag_id: Mapping[str, Sequence[dg.AssetKey]] = field(default_factory=dict)
    #: The sensor's settings and DAG selection, for `airpeer doctor` (lag against the late-commit window).
    late_commit_window: timedelta = timedelta(minutes=5)
    sensor_minimum_interval_seconds: int = 30
    dag_selector_fn: Callable[[Dag], bool] | None = None

    def owned_asset_keys(self, dag_ids: Iterable[str]) -> dict[str, tuple[dg.AssetKey, ...]]:
        """The assets whose Dagster history this peering records, per DAG: the DAG's own asset, then its mapped
        assets. What `airpeer clean` may wipe; `assets_to_wipe` decides which of them it does.

        The one place that decides ownership: a key that is not listed here is never wiped.
        """
        return {
            dag_id: tuple(
                dict.fromkeys(
                    (self.asset_keys_by_dag_id[dag_id], *self.mapped_asset_keys_by_dag_id.get(dag_id, ()))
                )
            )
            for dag_id in dag_ids
        }


@dataclass(frozen=True)
class SharedAsset:
    """A mapped asset that `airpeer clean` keeps: it is mapped to DAGs that were not selected as well."""

    key: dg.AssetKey
    #: The DAGs it is also mapped to and that were not selected, as "instance / dag_id".
    unselected: tuple[str, ...]


@dataclass(frozen=True)
class DagAssets:
    """What cleaning one DAG does to the assets it owns."""

    #: Wiped: the DAG's own asset and the mapped assets whose every DAG is selected (a key owned by several
    #: selected DAGs is listed under the first of them only, so that it is counted and wiped once).
    wiped: tuple[dg.AssetKey, ...]
    #: Kept: mapped assets that a DAG not selected maps as well.
    kept: tuple[SharedAsset, ...] = ()


def assets_to_wipe(
    peered: Sequence[PeeredInstance], selected: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, DagAssets]]:
    """Instance name -> DAG id -> what cleaning `selected` (instance name -> DAG ids) wipes and keeps.

    A mapped asset's history is one history, whichever DAG's task recorded it: wiping it because one of its
    DAGs is cleaned would delete what the others recorded, which the user did not ask for. So an asset mapped
    to several DAGs (of one instance or of several) is wiped only when every one of them is selected; otherwise
    it is kept, and said so. A DAG's own asset belongs to that DAG alone and is always wiped with it.
    """
    owners: dict[dg.AssetKey, list[tuple[str, str]]] = {}
    for entry in peered:
        for dag_id, keys in entry.mapped_asset_keys_by_dag_id.items():
            for key in keys:
                owners.setdefault(key, []).append((entry.instance.name, dag_id))
    chosen = {(name, dag_id) for name, dag_ids in selected.items() for dag_id in dag_ids}
    listed: set[dg.AssetKey] = set()
    plan: dict[str, dict[str, DagAssets]] = {}
    for entry in peered:
        name = entry.instance.name
        plan[name] = {}
        for dag_id, keys in entry.owned_asset_keys(selected.get(name, ())).items():
            wiped: list[dg.AssetKey] = []
            kept: list[SharedAsset] = []
            for key in keys:
                others = [f"{n} / {d}" for n, d in owners.get(key, []) if (n, d) not in chosen]
                if others and key != entry.asset_keys_by_dag_id[dag_id]:
                    kept.append(SharedAsset(key, tuple(sorted(set(others)))))
                elif key not in listed:
                    listed.add(key)
                    wiped.append(key)
            plan[name][dag_id] = DagAssets(tuple(wiped), tuple(kept))
    return plan


_PEERED: dict[str, PeeredInstance] = {}


def register(peered: PeeredInstance) -> None:
    # Keyed by instance name: re-importing a module replaces its entry instead of adding a twin.
    _PEERED[peered.instance.name] = peered


def peered_instances() -> list[PeeredInstance]:
    """Instances registered so far in this process, in registration order."""
    return list(_PEERED.values())


def clear_registry() -> None:
    _PEERED.clear()
