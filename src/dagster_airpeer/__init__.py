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
"""

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
