"""Which Airflow instances a definitions module peered, for commands such as `airpeer clean`.

`build_defs_from_airflow_instance` registers each instance it peers when the module is imported; the clean
command imports the user's definitions file and reads this registry, so it uses exactly the user's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from .airflow.instance import AirflowInstance


@dataclass(frozen=True)
class PeeredInstance:
    """One Airflow instance peered by a definitions module."""

    instance: AirflowInstance
    asset_keys_by_dag_id: Mapping[str, dg.AssetKey]
    sensor_name: str


_PEERED: dict[str, PeeredInstance] = {}


def register(peered: PeeredInstance) -> None:
    # Keyed by instance name: re-importing a module replaces its entry instead of adding a twin.
    _PEERED[peered.instance.name] = peered


def peered_instances() -> list[PeeredInstance]:
    """Instances registered so far in this process, in registration order."""
    return list(_PEERED.values())


def clear_registry() -> None:
    _PEERED.clear()
