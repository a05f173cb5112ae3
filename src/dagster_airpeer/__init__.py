"""airpeer: peer a running Apache Airflow 2 or 3 instance with a Dagster code location.

from dagster_airpeer import AirflowBasicAuthBackend, AirflowInstance, build_defs_from_airflow_instance

defs = build_defs_from_airflow_instance(
    airflow_instance=AirflowInstance(
        auth_backend=AirflowBasicAuthBackend(
            webserver_url="http://localhost:8080", username="admin", password="admin"
        ),
        name="airflow_instance_one",
    )
)

Names are imported on first use (PEP 562): `dagster_airpeer.in_airflow` runs inside Airflow's own environment,
which has no Dagster, and importing it imports this package first, so this file must not import Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .airflow import (
        TERMINAL_RUN_STATES,
        AirflowAstronomerAuthBackend,
        AirflowAuthBackend,
        AirflowAuthError,
        AirflowBasicAuthBackend,
        AirflowComposerAuthBackend,
        AirflowConfigError,
        AirflowConnectionError,
        AirflowError,
        AirflowInstance,
        AirflowMwaaAuthBackend,
        AirflowNotFoundError,
        AirflowResponseError,
        AirflowTokenAuthBackend,
        AirflowVersionError,
        Dag,
        DagRun,
        Task,
        TaskInstance,
    )
    from .components import AirflowInstanceComponent
    from .definitions import build_defs_from_airflow_instance
    from .events import RUN_STATUS_CHECK_NAME
    from .observe import (
        ObservedMappings,
        TaskHandleDict,
        assets_with_dag_mappings,
        assets_with_multiple_task_mappings,
        assets_with_task_mappings,
    )
    from .snapshot import AirflowSnapshot, SnapshotUnavailableError
    from .translator import DagsterAirflowTranslator, sanitize_dag_id

__version__ = "0.1.0"

__all__ = [
    "RUN_STATUS_CHECK_NAME",
    "TERMINAL_RUN_STATES",
    "AirflowAstronomerAuthBackend",
    "AirflowAuthBackend",
    "AirflowAuthError",
    "AirflowBasicAuthBackend",
    "AirflowComposerAuthBackend",
    "AirflowConfigError",
    "AirflowConnectionError",
    "AirflowError",
    "AirflowInstance",
    "AirflowInstanceComponent",
    "AirflowMwaaAuthBackend",
    "AirflowNotFoundError",
    "AirflowResponseError",
    "AirflowSnapshot",
    "AirflowTokenAuthBackend",
    "AirflowVersionError",
    "Dag",
    "DagRun",
    "DagsterAirflowTranslator",
    "ObservedMappings",
    "SnapshotUnavailableError",
    "Task",
    "TaskHandleDict",
    "TaskInstance",
    "__version__",
    "assets_with_dag_mappings",
    "assets_with_multiple_task_mappings",
    "assets_with_task_mappings",
    "build_defs_from_airflow_instance",
    "sanitize_dag_id",
]

#: Public name -> the submodule defining it, imported by `__getattr__` when the name is first read.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "TERMINAL_RUN_STATES",
            "AirflowAstronomerAuthBackend",
            "AirflowAuthBackend",
            "AirflowAuthError",
            "AirflowBasicAuthBackend",
            "AirflowComposerAuthBackend",
            "AirflowConfigError",
            "AirflowConnectionError",
            "AirflowError",
            "AirflowInstance",
            "AirflowMwaaAuthBackend",
            "AirflowNotFoundError",
            "AirflowResponseError",
            "AirflowTokenAuthBackend",
            "AirflowVersionError",
            "Dag",
            "DagRun",
            "Task",
            "TaskInstance",
        ),
        ".airflow",
    ),
    "AirflowInstanceComponent": ".components",
    "build_defs_from_airflow_instance": ".definitions",
    "RUN_STATUS_CHECK_NAME": ".events",
    **dict.fromkeys(
        (
            "ObservedMappings",
            "TaskHandleDict",
            "assets_with_dag_mappings",
            "assets_with_multiple_task_mappings",
            "assets_with_task_mappings",
        ),
        ".observe",
    ),
    "AirflowSnapshot": ".snapshot",
    "SnapshotUnavailableError": ".snapshot",
    "DagsterAirflowTranslator": ".translator",
    "sanitize_dag_id": ".translator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    # Cached, so later reads are plain module attributes.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # dg's registry lists the package's objects with dir() then getattr (dagster.components package_entry).
    return sorted({*globals(), *__all__})
